// Package comfy serves ComfyUI's HTTP and WebSocket API (/prompt, /queue,
// /history, /view, /upload/image, /object_info, /ws, ...; each also under
// /api/) on kiln's port, so that a client written for ComfyUI runs against
// kiln unchanged. docs/comfyui.md says what is and is not compatible.
//
// It holds the ComfyUI surface only: the /prompt decoder and validator
// against the workers' node specs, the result cache, the WebSocket hub that
// turns dispatcher events into ComfyUI's messages, output naming and PNG
// metadata. Kiln's own /v1 routes, the admin token and the server live in
// internal/api, which imports this package and registers its routes on the
// one mux. The dependency runs that way only: internal/api hands the routes
// its job access (Jobs: the cluster's or the local store's, so that /prompt
// and /v1/jobs submit alike) instead of this package importing internal/api,
// which would be a cycle.
//
//	comfy.Register(mux, cfg.ComfyUI, comfy.Deps{Store: store, Dispatcher: d, Jobs: jobs, ...})
package comfy
