// Package device finds the GPUs of a node, samples their health and keeps a
// VRAM ledger per device.
//
// There are two backends behind one narrow Device interface. The NVML backend
// reads real NVIDIA GPUs through github.com/NVIDIA/go-nvml, wrapped by the
// Driver interface so that tests can run it against a fake. The simulated
// backend takes its devices from config (name, memory, host-to-device
// bandwidth, compute speed factor) so that laptops and CI run the whole system;
// its figures are always labelled simulated.
//
// With backend "auto", Open tries NVML and falls back to the simulated devices,
// with one log line that says so, when there is no NVIDIA library, driver or
// GPU. Every NVML Init is paired with a Shutdown in Set.Close.
//
// A Ledger per device accounts for VRAM: a load reserves its bytes before it
// starts, so that a load that would overflow is refused up front (an error
// wrapping ErrInsufficientVRAM) instead of being discovered as an OOM. A
// configurable headroom fraction of each device is never handed out.
//
//	set, err := device.Open(cfg.Devices, log)
//	if err != nil { ... }
//	defer set.Close()
//	r, err := set.Ledger(0).Reserve("w0.1", "checkpoints/sdxl.safetensors", 7<<30)
//	if errors.Is(err, device.ErrInsufficientVRAM) { ... } // evict or pick another device
//	defer r.Release()
//	_ = r.Resize(6_800 << 20) // the worker reports the true footprint after load
package device
