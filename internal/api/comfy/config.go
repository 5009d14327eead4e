package comfy

import "github.com/kiln-gpu/kiln/internal/api/apiconfig"

// Config is the comfyui section (apiconfig.ComfyConfig); CacheConfig its
// result cache. The types live in apiconfig so that internal/config need not
// import the ComfyUI surface.
type (
	Config      = apiconfig.ComfyConfig
	CacheConfig = apiconfig.CacheConfig
)
