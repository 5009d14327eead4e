package plugin

import (
	"encoding/hex"
	"fmt"
	"time"
)

// Config is the plugins section: where binaries are and what they must hash to.
type Config struct {
	// Dir holds plugin binaries; empty means next to the kiln executable,
	// then PATH.
	Dir string `koanf:"dir"`
	// SHA256 maps a binary's file name (kiln-storage-fs) to its lower-case
	// hex sha256. A binary that does not match is refused.
	SHA256 map[string]string `koanf:"sha256"`
	// RequireSHA256 refuses binaries that SHA256 does not list. When false,
	// such a binary's digest is taken at first start and pinned for the
	// daemon's life, so that it cannot be swapped under a running kiln.
	RequireSHA256 bool `koanf:"require_sha256"`
	// RestartBackoffMin and RestartBackoffMax bound the exponential backoff
	// between restarts of a plugin that keeps dying.
	RestartBackoffMin time.Duration `koanf:"restart_backoff_min"`
	RestartBackoffMax time.Duration `koanf:"restart_backoff_max"`
	// MaxRetries is how many times one call is retried on a restarted plugin.
	MaxRetries int `koanf:"max_retries"`
	// StartTimeout bounds a plugin's start and handshake.
	StartTimeout time.Duration `koanf:"start_timeout"`
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.RestartBackoffMin <= 0 {
		c.RestartBackoffMin = 100 * time.Millisecond
	}
	if c.RestartBackoffMax <= 0 {
		c.RestartBackoffMax = 10 * time.Second
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = 5
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 15 * time.Second
	}
	return c
}

// Validate checks the checksums' shape.
func (c Config) Validate() error {
	for name, sum := range c.SHA256 {
		if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
			return fmt.Errorf("plugins.sha256.%s: not a hex sha256: %q", name, sum)
		}
	}
	if c.RestartBackoffMax > 0 && c.RestartBackoffMin > c.RestartBackoffMax {
		return fmt.Errorf("plugins: restart_backoff_min %s > restart_backoff_max %s", c.RestartBackoffMin, c.RestartBackoffMax)
	}
	return nil
}
