// Package shadow evaluates eviction policies on live traffic at no risk to
// it: ghost caches replay the node's model accesses under each candidate
// policy and report the hit ratio, misses, bytes loaded, estimated load time
// and evictions each would have had.
//
// A ghost cache holds metadata only (model, bytes, last use, hits, load
// cost), never model bytes. Each candidate gets its own hierarchy of ghosts
// at the live capacities — VRAM per device, L2 RAM, L3 disk — and decides
// every tier of it, as if it were the node's only eviction policy. An access
// climbs the hierarchy as a live load does: a VRAM miss reads from the RAM
// ghost, a RAM miss from the disk ghost, a disk miss from the remote source;
// each miss is charged bytes / the measured bandwidth into that tier.
//
//	s, err := shadow.New(shadow.PolicyCandidates(cfg.Policies, liveHost, log, clk), topo, sources, clk)
//	s.AccessOn(device, workerID, []string{"checkpoints/sdxl.safetensors"}) // or s.Feed(ctx, events, resolve)
//	rep := s.Report() // also s.Collector(); internal/api serves it as JSON
//
// # Notes
//
//   - Isolation: every ghost tier asks its own evictor (a private policy
//     host for built-ins), so policy state — tags, GDSF's inflation, S3-FIFO's
//     queues — never leaks between ghosts or into the live policy host.
//   - Bounded work: each access touches at most MaxModelsPerAccess models,
//     each ghost holds at most MaxEntries entries, and a decision is one
//     policy call over them. The work runs on the shadow's goroutine, fed by
//     the dispatcher's best-effort event bus, which drops events rather than
//     wait: a slow shadow loses accesses (counted), never delays a job.
//   - A candidate whose policy faults (trap, timeout, invalid answer) is
//     marked faulted and stops being fed; its figures so far stay visible.
package shadow
