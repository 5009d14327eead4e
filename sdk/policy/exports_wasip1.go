//go:build wasip1

package policy

import (
	"runtime"
	"unsafe"
)

//go:wasmimport kiln log
func hostLog(level uint32, ptr unsafe.Pointer, n uint32)

// Log sends a message to the host's log (kiln.log in WASM; NativeLog
// natively). The host rate-limits it; do not log per candidate.
func Log(level int, msg string) {
	if len(msg) == 0 {
		return
	}
	hostLog(uint32(level), unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

// The version marker is in marker_wasip1_gen.go, written by
// internal/abigen from ABIMajor and ABIMinor.

//go:wasmexport kiln_buffer
func kilnBuffer(n uint32) uint32 {
	b := served.Buffer(int(n))
	if len(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

//go:wasmexport kiln_params
func kilnParams() uint64 { return span64(served.ParamTable()) }

//go:wasmexport kiln_evict
func kilnEvict(n uint32) uint64 { return call(KindEviction, n) }

//go:wasmexport kiln_schedule
func kilnSchedule(n uint32) uint64 { return call(KindScheduling, n) }

//go:wasmexport kiln_batch
func kilnBatch(n uint32) uint64 { return call(KindBatching, n) }

//go:wasmexport kiln_balance
func kilnBalance(n uint32) uint64 { return call(KindBalancing, n) }

//go:wasmexport kiln_route
func kilnRoute(n uint32) uint64 { return call(KindRouting, n) }

func call(k Kind, n uint32) uint64 {
	buf := served.buf
	if int(n) > len(buf) {
		n = uint32(len(buf))
	}
	out := served.Call(k, buf[:n])
	// Without a yield here the Go runtime in a reactor never runs its
	// background GC work and the heap grows without bound (DESIGN §4.6).
	runtime.Gosched()
	return span64(out)
}

func span64(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))<<32 | uint64(len(b))
}
