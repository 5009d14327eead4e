//go:build race

package experiment

// raceEnabled shortens the statistical tests under the race detector,
// which checks the concurrency, not the statistics.
const raceEnabled = true
