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
}

// Default values that WithDefaults puts in place of zero fields.
const (
	DefaultInteractiveLimit = 10000
	DefaultBatchLimit       = 100000
	DefaultMaxAttempts      = 3
	DefaultCommitMaxBatch   = 1024
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
	return errors.Join(errs...)
}
