package main

import (
	"os"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// run starts the worker and returns the process's exit status: 0 when the
// kernel closes the socket or sends SIGTERM, 2 for bad settings, 1 when the
// connection breaks.
func run(getenv func(string) string) int {
	log := newLogger(getenv)
	s := newSim(log, clock.Real())
	if err := s.configureFromEnv(getenv); err != nil {
		log.Error().Err(err).Msg("bad environment")
		return 2
	}
	log.Info().Int("pid", os.Getpid()).Str("cuda_visible_devices", getenv("CUDA_VISIBLE_DEVICES")).
		Str("protocol", getenv("KILN_PROTOCOL")).Msg("starting")
	if err := wire.ServeFD3(s); err != nil {
		log.Error().Err(err).Msg("serve")
		return 1
	}
	log.Info().Msg("exiting")
	return 0
}

// newLogger logs JSON to stderr (stdout is never written), tagged with the
// worker id.
func newLogger(getenv func(string) string) zerolog.Logger {
	return zerolog.New(os.Stderr).With().Timestamp().
		Str("component", "worker-sim").Str("worker_id", getenv(EnvWorkerID)).Logger()
}
