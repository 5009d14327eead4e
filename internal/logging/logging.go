package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// New returns a logger that writes to w at cfg.Level in cfg.Format. An empty
// level means info and an empty format means auto, so that tools and tests
// can pass a zero Config; any other unknown value is an error.
//
// # Notes
//
// Lines carry a wall-clock timestamp from zerolog.TimestampFunc. That is the
// one place the kernel lets wall time in without a clock.Clock: a log line
// records when it was written on this machine, which is what an operator
// correlating logs needs even when the simulator runs on virtual time.
//
// New does not touch zerolog's global level or settings.
func New(cfg Config, w io.Writer) (zerolog.Logger, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return zerolog.Nop(), fmt.Errorf("logging: %w", err)
	}
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("logging: level: %w", err)
	}
	out := w
	if cfg.Format == FormatConsole || (cfg.Format == FormatAuto && IsTerminal(w)) {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly + ".000", NoColor: !IsTerminal(w)}
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger(), nil
}

// Component returns l tagged with component=name (e.g. "tier", "worker").
func Component(l zerolog.Logger, name string) zerolog.Logger {
	return l.With().Str("component", name).Logger()
}

// IsTerminal reports whether w is an *os.File attached to a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fd := f.Fd()
	return isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd)
}
