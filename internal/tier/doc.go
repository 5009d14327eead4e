// Package tier keeps model bytes close to the GPUs that need them.
//
// Four tiers stand between a model's source and a GPU: remote storage (L4, a
// storage plugin), local disk (L3, content-addressed files under the data
// dir), shared memory (L2, files under /dev/shm/kiln-*) and worker VRAM (L1,
// owned by the dispatcher and its device ledger). A Manager promotes a model
// L4→L3→L2 on demand with one transfer per (model, tier) however many callers
// ask at once, verifies size and sha256 on the way into L3 and again on the
// way out of it (a corrupt file is dropped and fetched again, never served),
// pins entries while a lease holds them, and asks an Evictor which unpinned
// entries to drop when a tier is full, down to the tier's target fill level.
//
//	m, err := tier.New(cfg, resolver, tier.Options{DataDir: dir, Clock: clk, Log: log,
//		DiskEvictor: host.NewEvictor(), RAMEvictor: host.NewEvictor()})
//	lease, err := m.Acquire(ctx, "checkpoints/sd15.safetensors") // promotes if absent
//	// worker: mmap(lease.Path(), lease.Bytes(), PROT_READ, MAP_SHARED)
//	lease.Release()
//
// # Notes
//
//   - L2 segments are plain files on tmpfs, named by sha256 and made
//     read-only, so a worker maps them without a copy and without a file
//     descriptor passing protocol. An evicted segment is unlinked; a worker
//     that still maps it keeps its pages until it unmaps.
//   - Bandwidth figures are measured on real transfers (EWMA of bytes/s of
//     transfers of at least 64 KiB), never assumed.
//   - AcquireConverted serves a model rewritten in another weight dtype
//     (tiers.convert: fp16, bf16, fp8_e4m3fn): the model's loader plugin
//     converts the L3 file into a new content-addressed L3 artifact with its
//     own sha256, and a JSON record of its source beside the blobs
//     (<disk dir>-conversions/) finds it again after a restart.
package tier
