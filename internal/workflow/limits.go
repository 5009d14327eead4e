package workflow

import "fmt"

// Limits bound what one workflow may ask for, so that a hostile or mistaken
// graph is refused at submit time instead of tying up a GPU.
type Limits struct {
	MaxNodes      int `koanf:"max_nodes"`
	MaxSteps      int `koanf:"max_steps"`
	MaxResolution int `koanf:"max_resolution"` // max width and height in pixels
	MaxBatchSize  int `koanf:"max_batch_size"`
}

// Default limits, used for every field left at zero.
const (
	DefaultMaxNodes      = 500
	DefaultMaxSteps      = 150
	DefaultMaxResolution = 4096
	DefaultMaxBatchSize  = 16
)

// WithDefaults returns a copy of l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxNodes == 0 {
		l.MaxNodes = DefaultMaxNodes
	}
	if l.MaxSteps == 0 {
		l.MaxSteps = DefaultMaxSteps
	}
	if l.MaxResolution == 0 {
		l.MaxResolution = DefaultMaxResolution
	}
	if l.MaxBatchSize == 0 {
		l.MaxBatchSize = DefaultMaxBatchSize
	}
	return l
}

// Validate reports the first field that is out of range, naming its config
// key. Call it after WithDefaults: a zero field is an error here.
func (l Limits) Validate() error {
	for _, f := range []struct {
		key string
		v   int
	}{
		{"limits.max_nodes", l.MaxNodes},
		{"limits.max_steps", l.MaxSteps},
		{"limits.max_resolution", l.MaxResolution},
		{"limits.max_batch_size", l.MaxBatchSize},
	} {
		if f.v < 1 {
			return fmt.Errorf("%s: must be ≥ 1, got %d", f.key, f.v)
		}
	}
	return nil
}
