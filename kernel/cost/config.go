package cost

// Config is the cost model that kiln-worker-sim (and later the simulator)
// charges time from. The cost helper owns the fields; see doc.go.
type Config struct {
	// TimeScale multiplies every charged duration: 1 is real time on the
	// reference GPU, 0.1 runs ten times faster (demos, tests).
	TimeScale float64 `koanf:"time_scale"`
}
