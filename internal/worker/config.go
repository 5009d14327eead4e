package worker

import "time"

// Config describes the worker pool.
type Config struct {
	// PerDevice is the number of worker processes pinned to each device.
	PerDevice int `koanf:"per_device"`
	// Command is the worker executable; empty means kiln-worker-sim next to
	// the kiln executable (or on PATH).
	Command string   `koanf:"command"`
	Args    []string `koanf:"args"`
	// Simulate allows the simulated worker (kiln-worker-sim) on devices
	// that NVML found: without it kiln refuses to start there rather than
	// sleep through jobs on a real GPU (CheckWorker).
	Simulate bool `koanf:"simulate"`
	// StartTimeout bounds process start plus hello.
	StartTimeout time.Duration `koanf:"start_timeout"`
	// PingInterval and PingTimeout drive health checks; a worker that misses
	// a ping is killed and restarted.
	PingInterval time.Duration `koanf:"ping_interval"`
	PingTimeout  time.Duration `koanf:"ping_timeout"`
	// RecycleAfterJobs restarts a worker after that many jobs (0: never).
	RecycleAfterJobs int `koanf:"recycle_after_jobs"`
	// MaxRSSBytes restarts a worker whose resident memory grows past it (0: never).
	MaxRSSBytes int64 `koanf:"max_rss_bytes"`
	// Env is what workers get of an environment beyond DefaultEnv and the
	// variables kiln sets (KILN_WORKER_ID, KILN_PROTOCOL,
	// CUDA_VISIBLE_DEVICES): "NAME" passes kiln's own value through,
	// "NAME=VALUE" sets one. Workers never inherit kiln's whole environment
	// (which may hold the admin token or cloud credentials).
	Env []string `koanf:"env"`
	// RestartBackoffMin and RestartBackoffMax bound the exponential backoff
	// between restarts of a worker that keeps crashing.
	RestartBackoffMin time.Duration `koanf:"restart_backoff_min"`
	RestartBackoffMax time.Duration `koanf:"restart_backoff_max"`
}
