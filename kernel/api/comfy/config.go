package comfy

import "github.com/kiln-gpu/kiln/kernel/api/apiconfig"

// Config is the comfyui section (apiconfig.ComfyConfig); CacheConfig its
// result cache. The types live in apiconfig so that kernel/config need not
// import the ComfyUI surface.
type (
	Config      = apiconfig.ComfyConfig
	CacheConfig = apiconfig.CacheConfig
)
