package job

import (
	"errors"
	"fmt"
)

// Config bounds the durable queue.
type Config struct {
	// InteractiveLimit and BatchLimit bound the number of queued (not yet
	// running) jobs per class; a submit beyond them is refused with ErrQueueFull.
	InteractiveLimit int `koanf:"interactive_limit"`
	BatchLimit       int `koanf:"batch_limit"`
	// MaxAttempts is how many times a job may be started before it fails
	// (a worker crash mid-job costs one attempt).
	MaxAttempts int `koanf:"max_attempts"`
	// CommitMaxBatch bounds how many submissions share one fsync.
	CommitMaxBatch int `koanf:"commit_max_batch"`
	// HistoryLimit bounds how many finished (done, failed, cancelled) jobs
	// the store keeps; the oldest are deleted in batches beyond it, so that
	// a long-running node's disk and memory stay flat. -1 keeps every job.
	// ComfyUI keeps 10,000 history items; so does kiln by default.
	HistoryLimit int `koanf:"history_limit"`
}

// Default values that WithDefaults puts in place of zero fields.
const (
	DefaultInteractiveLimit = 10000
	DefaultBatchLimit       = 100000
	DefaultMaxAttempts      = 3
	DefaultCommitMaxBatch   = 1024
	DefaultHistoryLimit     = 10000
)

// WithDefaults returns a copy of c in which every zero field holds its
// default: interactive_limit 10000, batch_limit 100000, max_attempts 3,
// commit_max_batch 1024. Negative fields are kept so that Validate reports
// them.
func (c Config) WithDefaults() Config {
	if c.InteractiveLimit == 0 {
		c.InteractiveLimit = DefaultInteractiveLimit
	}
	if c.BatchLimit == 0 {
		c.BatchLimit = DefaultBatchLimit
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.CommitMaxBatch == 0 {
		c.CommitMaxBatch = DefaultCommitMaxBatch
	}
	if c.HistoryLimit == 0 {
		c.HistoryLimit = DefaultHistoryLimit
	}
	return c
}

// Validate checks a config after WithDefaults; a zero field is an error here,
// so call it on c.WithDefaults(). Messages name the config key.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		key string
		v   int
	}{
		{"queue.interactive_limit", c.InteractiveLimit},
		{"queue.batch_limit", c.BatchLimit},
		{"queue.max_attempts", c.MaxAttempts},
		{"queue.commit_max_batch", c.CommitMaxBatch},
	} {
		if f.v < 1 {
			errs = append(errs, fmt.Errorf("%s: must be ≥ 1, got %d", f.key, f.v))
		}
	}
	if c.HistoryLimit < -1 || c.HistoryLimit == 0 {
		errs = append(errs, fmt.Errorf("queue.history_limit: must be ≥ 1, or -1 to keep every job, got %d", c.HistoryLimit))
	}
	return errors.Join(errs...)
}
