//go:build !wasip1

package policy

// Log sends a message to the host's log (kiln.log in WASM; NativeLog here).
// The host rate-limits it; do not log per candidate.
func Log(level int, msg string) {
	if NativeLog != nil {
		NativeLog(level, msg)
	}
}
