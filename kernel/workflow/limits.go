package workflow

// Limits bound what one workflow may ask for, so that a hostile or mistaken
// graph is refused at submit time instead of tying up a GPU.
type Limits struct {
	MaxNodes      int `koanf:"max_nodes"`
	MaxSteps      int `koanf:"max_steps"`
	MaxResolution int `koanf:"max_resolution"` // max width and height in pixels
	MaxBatchSize  int `koanf:"max_batch_size"`
}
