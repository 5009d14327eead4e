package dispatch

import "fmt"

// Config is the dispatch section of kiln's config.
type Config struct {
	// LookaheadJobs is how many queued jobs, from the head of the queue,
	// have their models pulled up the tiers while they wait; 0 turns
	// lookahead off.
	LookaheadJobs int `koanf:"lookahead_jobs"`
}

// DefaultLookaheadJobs is the lookahead of the embedded config and of a
// dispatcher built without one.
const DefaultLookaheadJobs = 4

// Validate checks the section; errors name the full key.
func (c Config) Validate() error {
	if c.LookaheadJobs < 0 || c.LookaheadJobs > 256 {
		return fmt.Errorf("dispatch.lookahead_jobs: must be between 0 and 256, got %d", c.LookaheadJobs)
	}
	return nil
}
