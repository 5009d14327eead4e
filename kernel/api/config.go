package api

import "time"

// Config holds the HTTP server's limits.
type Config struct {
	MaxBodyBytes      int64         `koanf:"max_body_bytes"`
	MaxHeaderBytes    int           `koanf:"max_header_bytes"`
	ReadHeaderTimeout time.Duration `koanf:"read_header_timeout"`
	ReadTimeout       time.Duration `koanf:"read_timeout"`
	WriteTimeout      time.Duration `koanf:"write_timeout"`
	IdleTimeout       time.Duration `koanf:"idle_timeout"`
	// PProf serves net/http/pprof under /debug/pprof/.
	PProf bool `koanf:"pprof"`
}
