//go:build race

package shadow

// raceEnabled: the race detector slows WASM calls past the policy call
// deadline, which the shadow rightly reports as faults.
const raceEnabled = true
