package logging

// Config selects the log level and output format.
type Config struct {
	// Level is one of trace, debug, info, warn, error.
	Level string `koanf:"level"`
	// Format is auto (console on a terminal, JSON otherwise), console or json.
	Format string `koanf:"format"`
}
