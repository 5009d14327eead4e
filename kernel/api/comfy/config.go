package comfy

import (
	"errors"
	"fmt"
	"time"

	"github.com/kiln-gpu/kiln/kernel/job"
)

// Config is the comfyui section: kiln's ComfyUI-compatible API
// (/prompt, /queue, /history, /view, /ws, ...; see docs/comfyui.md).
type Config struct {
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

// CacheConfig bounds the result cache: a /prompt whose canonical graph
// matches a finished one is answered from it without running.
type CacheConfig struct {
	Enabled    *bool         `koanf:"enabled"`
	MaxEntries int           `koanf:"max_entries"`
	MaxAge     time.Duration `koanf:"max_age"`
}

// WithDefaults fills zero fields with the defaults of configs/kiln.yaml.
func (c Config) WithDefaults() Config {
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
func (c Config) Validate() error {
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
