package tier

import (
	"testing"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "defaults", cfg: Config{}.WithDefaults()},
		{name: "fill above one", cfg: Config{Disk: DiskConfig{TargetFill: 1.5}}, wantErr: true},
		{name: "backend without plugin", cfg: Config{Remote: RemoteConfig{Backends: []BackendConfig{{Name: "x"}}}}, wantErr: true},
		{name: "extension without dot", cfg: Config{Remote: RemoteConfig{Loaders: []LoaderConfig{{Plugin: "p", Extensions: []string{"gguf"}}}}}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}
