// Package dashboard is kiln's built-in operator dashboard: one page at GET /
// on kiln's listen address, its assets embedded in the binary, and the few
// read-only JSON views the /v1 API does not already give.
//
// The page reads the existing /v1 endpoints (jobs, workers, devices,
// tiers, policies, experiments) and three of this package's:
//
//	GET /v1/dashboard         queue by class and state, the VRAM ledger's
//	                          reservations per device, what is resident in
//	                          which tier, recent events
//	GET /v1/dashboard/vram    the ledger sampled over the last hour
//	GET /v1/dashboard/events  job events as they happen (Server-Sent Events)
//
// Everything here is read-only, so it needs no admin token; like the rest
// of the API it is reachable only where kiln listens (loopback by default).
// It lives under internal/api because it is nothing but an HTTP surface (a
// page, its assets, three views of the kernel's parts): internal/api
// registers its routes on the one mux, and the kernel packages it reads
// (job, dispatch, device, tier, catalog) expose methods and data only.
//
// The page is plain HTML, CSS and JavaScript (charts are inline SVG), so it
// builds with the Go toolchain alone and its bytes are the files in assets/.
//
//	d := dashboard.New(dashboard.Sources{Store: store, Devices: devs, ...})
//	d.Register(mux)
//	go d.Run(ctx) // samples the ledger, records and streams events until ctx ends
package dashboard
