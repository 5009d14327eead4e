package logging

import (
	"errors"
	"fmt"
	"slices"
)

// Levels and Formats are the accepted values of Config.Level and
// Config.Format.
var (
	Levels  = []string{"trace", "debug", "info", "warn", "error"}
	Formats = []string{FormatAuto, FormatConsole, FormatJSON}
)

// Format names.
const (
	// FormatAuto is console on a terminal, JSON otherwise.
	FormatAuto = "auto"
	// FormatConsole is zerolog's human-readable ConsoleWriter.
	FormatConsole = "console"
	// FormatJSON is one JSON object per line.
	FormatJSON = "json"
)

// Config selects the log level and output format.
type Config struct {
	// Level is one of trace, debug, info, warn, error.
	Level string `koanf:"level"`
	// Format is auto (console on a terminal, JSON otherwise), console or json.
	Format string `koanf:"format"`
}

// WithDefaults returns a copy of c with an empty Level set to info and an
// empty Format set to auto.
func (c Config) WithDefaults() Config {
	if c.Level == "" {
		c.Level = "info"
	}
	if c.Format == "" {
		c.Format = FormatAuto
	}
	return c
}

// Validate checks that Level and Format are known. Errors name the full
// config key ("log.level: ...").
func (c Config) Validate() error {
	var errs []error
	if !slices.Contains(Levels, c.Level) {
		errs = append(errs, fmt.Errorf("log.level: %q is not one of trace, debug, info, warn, error", c.Level))
	}
	if !slices.Contains(Formats, c.Format) {
		errs = append(errs, fmt.Errorf("log.format: %q is not one of auto, console, json", c.Format))
	}
	return errors.Join(errs...)
}
