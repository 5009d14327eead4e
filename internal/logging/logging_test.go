package logging

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		wantErr  string
		wantJSON bool
		wantInfo bool // whether an info line is written
		wantDbg  bool // whether a debug line is written
	}{
		{name: "json info", cfg: Config{Level: "info", Format: "json"}, wantJSON: true, wantInfo: true},
		{name: "auto on a buffer is json", cfg: Config{Level: "debug", Format: "auto"}, wantJSON: true, wantInfo: true, wantDbg: true},
		{name: "zero config", cfg: Config{}, wantJSON: true, wantInfo: true},
		{name: "warn drops info", cfg: Config{Level: "warn", Format: "json"}, wantJSON: true},
		{name: "console", cfg: Config{Level: "trace", Format: "console"}, wantInfo: true, wantDbg: true},
		{name: "bad level", cfg: Config{Level: "verbose", Format: "json"}, wantErr: `level: "verbose" is not one of`},
		{name: "bad format", cfg: Config{Level: "info", Format: "xml"}, wantErr: `format: "xml" is not one of`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(tc.cfg, &buf)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New err = %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cl := Component(l, "tier")
			cl.Info().Str("model", "m").Msg("promoted")
			l.Debug().Msg("dbg")
			out := buf.String()
			if got := strings.Contains(out, "promoted"); got != tc.wantInfo {
				t.Errorf("info line written = %v; want %v (%q)", got, tc.wantInfo, out)
			}
			if got := strings.Contains(out, "dbg"); got != tc.wantDbg {
				t.Errorf("debug line written = %v; want %v (%q)", got, tc.wantDbg, out)
			}
			if !tc.wantInfo {
				return
			}
			first := strings.SplitN(out, "\n", 2)[0]
			var m map[string]any
			isJSON := json.Unmarshal([]byte(first), &m) == nil
			if isJSON != tc.wantJSON {
				t.Fatalf("JSON = %v; want %v: %q", isJSON, tc.wantJSON, first)
			}
			if isJSON {
				if m["component"] != "tier" || m["level"] != "info" || m["model"] != "m" || m["time"] == nil {
					t.Errorf("line = %v", m)
				}
			} else if !strings.Contains(first, "component=tier") {
				t.Errorf("console line %q lacks component=tier", first)
			}
		})
	}
}

func TestAutoOnRegularFileIsJSON(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Fatal("a regular file is a terminal")
	}
	l, err := New(Config{Level: "info", Format: "auto"}, f)
	if err != nil {
		t.Fatal(err)
	}
	l.Info().Msg("hello")
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(b), &m); err != nil || m["message"] != "hello" {
		t.Errorf("file line %q: %v", b, err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg     Config
		wantErr bool
	}{
		{cfg: Config{Level: "info", Format: "auto"}},
		{cfg: Config{Level: "error", Format: "json"}},
		{cfg: Config{Level: "", Format: "json"}, wantErr: true},
		{cfg: Config{Level: "INFO", Format: "json"}, wantErr: true},
		{cfg: Config{Level: "info", Format: "text"}, wantErr: true},
	} {
		t.Run(tc.cfg.Level+"/"+tc.cfg.Format, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v; wantErr %v", err, tc.wantErr)
			}
		})
	}
}
