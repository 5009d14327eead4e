package job

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
