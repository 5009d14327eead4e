//go:build race

package sim

// raceEnabled is true under the race detector.
const raceEnabled = true
