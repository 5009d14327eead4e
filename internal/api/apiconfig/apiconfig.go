// Package apiconfig holds the sections of kiln's config that configure
// the HTTP server: api (its limits), admin (the token that guards the
// mutating routes) and comfyui (the ComfyUI-compatible surface). They live
// apart from internal/api, as clusterconfig and autotune do for their
// packages, so that internal/config, which composes every package's section,
// does not import the HTTP server and, through its handlers, the tuner and
// the simulator: the simulator's own tests load kiln's config.
package apiconfig

import (
	"errors"
	"fmt"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
)

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

// WithDefaults fills zero fields with the defaults of configs/kiln.yaml.
func (c Config) WithDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 10 << 20
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 1 << 20
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 5 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 60 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 120 * time.Second
	}
	return c
}

// Validate checks the api section.
func (c Config) Validate() error {
	switch {
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("api.max_body_bytes: must be ≥ 1024, got %d", c.MaxBodyBytes)
	case c.MaxHeaderBytes < 4096:
		return fmt.Errorf("api.max_header_bytes: must be ≥ 4096, got %d", c.MaxHeaderBytes)
	case c.ReadHeaderTimeout <= 0, c.ReadTimeout <= 0, c.WriteTimeout <= 0, c.IdleTimeout <= 0:
		return errors.New("api: timeouts must be > 0")
	}
	return nil
}

// AdminConfig is the admin section: the token that guards the mutating
// endpoints (POST /v1/policies, /v1/models/refresh, /v1/experiments, ...).
type AdminConfig struct {
	// Token is the admin bearer token. Empty: KILN_ADMIN_TOKEN, else the
	// token kiln keeps in <data_dir>/admin.token (created on first start).
	Token string `koanf:"token"`
}

// ComfyConfig is the comfyui section: kiln's ComfyUI-compatible API
// (/prompt, /queue, /history, /view, /ws, ...; see docs/comfyui.md).
type ComfyConfig struct {
	// InputDir holds uploaded images (/upload/image, LoadImage, /view
	// type=input); empty means "input" next to the output directory.
	InputDir string `koanf:"input_dir"`
	// DefaultClass is the priority class of a /prompt without "front".
	DefaultClass string `koanf:"default_class"`
	// Keepalive is how often an idle WebSocket gets a status frame;
	// ComfyUI clients reconnect after 10 s of silence.
	Keepalive time.Duration `koanf:"keepalive"`
	// PreviewMethod is ComfyUI's --preview-method: "none" (the default, as
	// in ComfyUI) sends no sampler previews; "auto", "latent2rgb" or
	// "taesd" forward the workers' previews as binary frames. A prompt may
	// choose for itself with extra_data.preview_method, as ComfyUI's
	// executor allows ("default" or none: this setting).
	PreviewMethod string `koanf:"preview_method"`
	// Cache configures the result cache.
	Cache CacheConfig `koanf:"cache"`
}

// previewMethods are ComfyUI's LatentPreviewMethod values.
var previewMethods = map[string]bool{"none": true, "auto": true, "latent2rgb": true, "taesd": true}

// IsPreviewMethod reports whether m is one of ComfyUI's preview methods
// (none, auto, latent2rgb, taesd), as a prompt's extra_data may name one.
func IsPreviewMethod(m string) bool { return previewMethods[m] }

// CacheConfig bounds the result cache: a /prompt whose canonical graph
// matches a finished one is answered from it without running.
type CacheConfig struct {
	Enabled    *bool         `koanf:"enabled"`
	MaxEntries int           `koanf:"max_entries"`
	MaxAge     time.Duration `koanf:"max_age"`
}

// WithDefaults fills zero fields with the defaults of configs/kiln.yaml.
func (c ComfyConfig) WithDefaults() ComfyConfig {
	if c.DefaultClass == "" {
		c.DefaultClass = string(job.Interactive)
	}
	if c.PreviewMethod == "" {
		c.PreviewMethod = "none"
	}
	if c.Keepalive == 0 {
		c.Keepalive = 5 * time.Second
	}
	if c.Cache.Enabled == nil {
		on := true
		c.Cache.Enabled = &on
	}
	if c.Cache.MaxEntries == 0 {
		c.Cache.MaxEntries = 1024
	}
	if c.Cache.MaxAge == 0 {
		c.Cache.MaxAge = 24 * time.Hour
	}
	return c
}

// Validate checks the comfyui section.
func (c ComfyConfig) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.DefaultClass != string(job.Interactive) && c.DefaultClass != string(job.Batch):
		return fmt.Errorf("comfyui.default_class: %q is not one of interactive, batch", c.DefaultClass)
	case c.Keepalive < 100*time.Millisecond || c.Keepalive > 9*time.Second:
		return fmt.Errorf("comfyui.keepalive: must be between 100ms and 9s (clients give up after 10s), got %s", c.Keepalive)
	case !previewMethods[c.PreviewMethod]:
		return fmt.Errorf("comfyui.preview_method: %q is not one of none, auto, latent2rgb, taesd", c.PreviewMethod)
	case c.Cache.MaxEntries < 0:
		return errors.New("comfyui.cache.max_entries: must be ≥ 0")
	case c.Cache.MaxAge < 0:
		return errors.New("comfyui.cache.max_age: must be ≥ 0")
	}
	return nil
}
