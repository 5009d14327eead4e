package config

import (
	"testing"

	"github.com/kiln-gpu/kiln/configs"
)

// FuzzLoadYAML checks that loading any bytes as a config file never panics,
// and that whatever loads prints and loads again.
func FuzzLoadYAML(f *testing.F) {
	f.Add(configs.Default)
	f.Add([]byte("queue:\n  max_attempts: 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := load(configs.Default, "fuzz.yaml", data, LoadOptions{})
		if err != nil {
			return
		}
		out, err := cfg.YAML()
		if err != nil {
			t.Fatalf("YAML: %v", err)
		}
		if _, err := load(configs.Default, "printed.yaml", out, LoadOptions{}); err != nil {
			t.Fatalf("reload printed config: %v\n%s", err, out)
		}
	})
}
