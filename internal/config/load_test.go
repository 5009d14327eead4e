package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/configs"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kiln.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultLoadsAndValidates(t *testing.T) {
	cfg, err := Load(LoadOptions{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "127.0.0.1:8188"},
		{"data_dir", cfg.DataDir, "./data"},
		{"log.level", cfg.Log.Level, "info"},
		{"api.max_body_bytes", cfg.API.MaxBodyBytes, int64(10 << 20)},
		{"api.read_header_timeout", cfg.API.ReadHeaderTimeout, 5 * time.Second},
		{"queue.batch_limit", cfg.Queue.BatchLimit, 100000},
		{"devices.headroom", cfg.Devices.Headroom, 0.2},
		{"devices.simulated", len(cfg.Devices.Simulated), 2},
		{"devices.simulated[1].memory_bytes", cfg.Devices.Simulated[1].MemoryBytes, uint64(25769803776)},
		{"devices.simulated[0].h2d_bytes_per_s", cfg.Devices.Simulated[0].H2DBytesPerS, 25e9},
		{"workers.restart_backoff_min", cfg.Workers.RestartBackoffMin, 200 * time.Millisecond},
		{"workers.args", len(cfg.Workers.Args), 0},
		{"cost.time_scale", cfg.Cost.TimeScale, 1.0},
		{"limits.max_steps", cfg.Limits.MaxSteps, 150},
		{"dispatch.preemption", cfg.Dispatch.Preemption, true},
		{"dispatch.preempt_min_run", cfg.Dispatch.PreemptMinRun, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("%s = %v; want %v", tc.name, tc.got, tc.want)
			}
		})
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// TestDefaultDocumentsEveryKey fails when a section gains a key that
// configs/kiln.yaml neither sets nor shows in a comment.
func TestDefaultDocumentsEveryKey(t *testing.T) {
	var walk func(path string, n *node)
	walk = func(path string, n *node) {
		if path != "" {
			name := path[strings.LastIndex(path, ".")+1:]
			re := regexp.MustCompile(`(?m)^[ \t]*(#[ \t]*)?(- )?` + regexp.QuoteMeta(name) + `:`)
			if !re.Match(configs.Default) {
				t.Errorf("configs/kiln.yaml does not document %s; add it with its default", path)
			}
		}
		switch n.kind {
		case structKind:
			for _, k := range n.keys {
				walk(join(path, k), n.fields[k])
			}
		case listKind:
			for _, k := range n.elem.keys {
				walk(join(path, k), n.elem.fields[k])
			}
		}
	}
	walk("", schema)
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "log:\n  level: warn\nqueue:\n  max_attempts: 4\n  batch_limit: 7\nworkers:\n  per_device: 3\n")
	env := []string{"PATH=/bin", "KILN_QUEUE__MAX_ATTEMPTS=5", "KILN_WORKERS__PER_DEVICE=4", "KILN_ADDR=http://x"}
	sets := []string{"workers.per_device=6"}
	for _, tc := range []struct {
		name string
		opts LoadOptions
		want [4]int // batch_limit, max_attempts, per_device, and whether level is warn (1)
	}{
		{name: "default", opts: LoadOptions{}, want: [4]int{100000, 3, 2, 0}},
		{name: "file", opts: LoadOptions{File: file}, want: [4]int{7, 4, 3, 1}},
		{name: "env over file", opts: LoadOptions{File: file, Env: env}, want: [4]int{7, 5, 4, 1}},
		{name: "set over env", opts: LoadOptions{File: file, Env: env, Sets: sets}, want: [4]int{7, 5, 6, 1}},
		{name: "later set wins", opts: LoadOptions{Sets: []string{"queue.max_attempts=8", "queue.max_attempts=9"}}, want: [4]int{100000, 9, 2, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			warn := 0
			if cfg.Log.Level == "warn" {
				warn = 1
			}
			got := [4]int{cfg.Queue.BatchLimit, cfg.Queue.MaxAttempts, cfg.Workers.PerDevice, warn}
			if got != tc.want {
				t.Errorf("got %v; want %v", got, tc.want)
			}
		})
	}
}

func TestValueTypes(t *testing.T) {
	cfg, err := Load(LoadOptions{
		Env: []string{
			"KILN_WORKERS__PING_INTERVAL=3s",
			"KILN_WORKERS__ARGS=[--fast, -v]",
			"KILN_DATA_DIR=0755",
			"KILN_DEVICES__HEADROOM=0.25",
		},
		Sets: []string{
			"devices.backend=sim",
			"devices.simulated=[{name: a, memory_bytes: 8589934592, h2d_bytes_per_s: 12e9, compute_factor: 0.5}]",
			"workers.command=/usr/bin/true",
			"api.max_body_bytes=2e6",
			"output_dir=",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Workers.PingInterval != 3*time.Second || strings.Join(cfg.Workers.Args, " ") != "--fast -v" ||
		cfg.DataDir != "0755" || cfg.Devices.Headroom != 0.25 || cfg.Devices.Backend != "sim" ||
		len(cfg.Devices.Simulated) != 1 || cfg.Devices.Simulated[0].ComputeFactor != 0.5 ||
		cfg.Workers.Command != "/usr/bin/true" || cfg.API.MaxBodyBytes != 2e6 || cfg.OutputDir != "" {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		env  []string
		sets []string
		want string
	}{
		{
			name: "unknown key in file", file: "queue:\n  max_attemps: 3\n",
			want: `unknown key "queue.max_attemps" (allowed under queue: batch_limit, commit_max_batch, `,
		},
		{name: "unknown top-level key in file", file: "listne: x\n", want: `unknown key "listne" (allowed at top level: admin, api, `},
		{name: "unknown key in list element", file: "devices:\n  simulated:\n    - name: a\n      memory: 1\n", want: `unknown key "devices.simulated[0].memory" (allowed under devices.simulated[0]: compute_factor, h2d_bytes_per_s, memory_bytes, name)`},
		{name: "unknown key in map value", file: "cost:\n  families:\n    sdxl:\n      step_secs: 1\n", want: `unknown key "cost.families.sdxl.step_secs"`},
		{name: "section as scalar", file: "queue: 5\n", want: `queue: want a section with keys batch_limit`},
		{name: "bad yaml", file: "queue: [\n", want: "config: "},
		{name: "bad int in file", file: "queue:\n  max_attempts: abc\n", want: `queue.max_attempts: cannot parse "abc" as int`},
		{name: "fraction for int", file: "queue:\n  max_attempts: 2.5\n", want: `queue.max_attempts: cannot parse "2.5" as int`},
		{name: "negative uint", file: "devices:\n  simulated:\n    - {name: a, memory_bytes: -1, h2d_bytes_per_s: 1, compute_factor: 1}\n", want: `devices.simulated[0].memory_bytes: cannot parse "-1" as unsigned int`},
		{name: "bad duration", file: "api:\n  read_timeout: soon\n", want: `api.read_timeout: cannot parse "soon" as duration`},
		{name: "duration without unit", file: "api:\n  read_timeout: 30\n", want: `api.read_timeout: cannot parse "30" as duration`},
		{name: "unknown env", env: []string{"KILN_QUEUE__MAX_ATTEMPS=3"}, want: `config: env KILN_QUEUE__MAX_ATTEMPS: unknown key "queue.max_attemps"`},
		{name: "env with one underscore", env: []string{"KILN_LOG_LEVEL=debug"}, want: `(did you mean KILN_LOG__LEVEL?)`},
		{name: "bad env int", env: []string{"KILN_QUEUE__MAX_ATTEMPTS=abc"}, want: `config: env KILN_QUEUE__MAX_ATTEMPTS: queue.max_attempts: cannot parse "abc" as int`},
		{name: "env into list", env: []string{"KILN_DEVICES__SIMULATED__0__NAME=x"}, want: `devices.simulated is a list: set it whole`},
		{name: "unknown set", sets: []string{"queue.max_attemps=3"}, want: `config: --set queue.max_attemps=3: unknown key "queue.max_attemps" (allowed under queue:`},
		{name: "set below a value", sets: []string{"listen.port=3"}, want: `unknown key "listen.port" (listen is a value, not a section)`},
		{name: "set without =", sets: []string{"queue.max_attempts"}, want: `config: --set "queue.max_attempts": want key=value`},
		{name: "empty set value for int", sets: []string{"queue.max_attempts="}, want: `queue.max_attempts: cannot parse "" as int`},
		{name: "bad set bool", sets: []string{"devices.headroom=lots"}, want: `devices.headroom: cannot parse "lots" as number`},
		{name: "bad level", sets: []string{"log.level=verbose"}, want: `config: log.level: "verbose" is not one of trace, debug, info, warn, error`},
		{name: "bad format", env: []string{"KILN_LOG__FORMAT=xml"}, want: `config: log.format: "xml" is not one of auto, console, json`},
		{name: "bad backend", sets: []string{"devices.backend=cuda"}, want: `config: devices.backend: "cuda" is not one of auto, nvml, sim`},
		{name: "headroom 1", sets: []string{"devices.headroom=1"}, want: `devices.headroom: 1 is outside [0, 1)`},
		{name: "duplicate sim names", sets: []string{"devices.simulated=[{name: a, memory_bytes: 1, h2d_bytes_per_s: 1, compute_factor: 1}, {name: a, memory_bytes: 1, h2d_bytes_per_s: 1, compute_factor: 1}]"}, want: `devices.simulated[1].name: "a" is already used`},
		{name: "sim without memory", sets: []string{"devices.simulated=[{name: a, h2d_bytes_per_s: 1, compute_factor: 1}]"}, want: `devices.simulated[0].memory_bytes: must be > 0`},
		{name: "bad listen", sets: []string{"listen=localhost"}, want: `config: listen: "localhost" is not host:port`},
		{name: "bad port", sets: []string{"listen=127.0.0.1:http"}, want: `listen: "127.0.0.1:http": port "http" is not a number`},
		{name: "workers per_device", sets: []string{"workers.per_device=-1"}, want: `workers.per_device`},
		{name: "backoff min over max", sets: []string{"workers.restart_backoff_min=20s"}, want: `workers.restart_backoff_max`},
		{name: "queue limit", sets: []string{"queue.batch_limit=-5"}, want: `queue.batch_limit`},
		{name: "limits", sets: []string{"limits.max_nodes=-1"}, want: `limits.max_nodes`},
		{name: "empty data_dir", sets: []string{"data_dir="}, want: `config: data_dir: must not be empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := LoadOptions{Env: tc.env, Sets: tc.sets}
			if tc.file != "" {
				opts.File = writeFile(t, tc.file)
			}
			_, err := Load(opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEmptySectionsAreAccepted(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		wantScale  float64
	}{
		{name: "empty sections", body: "cost:\nqueue:\n# everything commented\nlog: {}\n", wantScale: 1},
		{name: "cost key", body: "cost:\n  time_scale: 0.5\n  pixel_exponent: 0.8\n", wantScale: 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(LoadOptions{File: writeFile(t, tc.body)})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Cost.TimeScale != tc.wantScale || cfg.Queue.MaxAttempts != 3 || cfg.Log.Level != "info" {
				t.Errorf("cfg = %+v", cfg)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(LoadOptions{File: filepath.Join(t.TempDir(), "nope.yaml")})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v; want not exist", err)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts LoadOptions
	}{
		{name: "default"},
		{name: "changed", opts: LoadOptions{Sets: []string{
			"workers.args=[a, 'b c']", "api.idle_timeout=1m30s", "devices.headroom=0.1",
			"output_dir=/tmp/out", "cost.time_scale=0.01",
			"cost.families={sdxl: {step_seconds: 0.2}}",
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			out, err := cfg.YAML()
			if err != nil {
				t.Fatal(err)
			}
			again, err := Load(LoadOptions{File: writeFile(t, string(out))})
			if err != nil {
				t.Fatalf("load printed config: %v\n%s", err, out)
			}
			out2, err := again.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != string(out2) {
				t.Errorf("print → load → print differs:\n%s\n---\n%s", out, out2)
			}
			if !strings.HasPrefix(string(out), "listen: ") {
				t.Errorf("printed config does not start with listen:\n%s", out)
			}
		})
	}
}

func TestValidateFile(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		wantErr    bool
	}{
		{name: "ok", body: "log:\n  level: debug\n"},
		{name: "empty", body: ""},
		{name: "unknown key", body: "log:\n  levle: debug\n", wantErr: true},
		{name: "invalid value", body: "workers:\n  per_device: -1\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateFile(writeFile(t, tc.body)); (err != nil) != tc.wantErr {
				t.Errorf("ValidateFile = %v; wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestEnvKey(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"KILN_LOG__LEVEL", "log.level", true},
		{"KILN_DATA_DIR", "data_dir", true},
		{"KILN_QUEUE__MAX_ATTEMPTS", "queue.max_attempts", true},
		{"HOME", "", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := EnvKey(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("EnvKey(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestValidationErrorLists(t *testing.T) {
	_, err := Load(LoadOptions{Sets: []string{"log.level=x", "devices.backend=y"}})
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) < 2 {
		t.Fatalf("err = %v; want a ValidationError with 2 problems", err)
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(line, "config: ") {
			t.Errorf("line %q lacks the config: prefix", line)
		}
	}
}
