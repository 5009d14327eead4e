package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func simConfig(backend string) Config {
	return Config{
		Backend:  backend,
		Headroom: 0.2,
		Simulated: []SimDeviceConfig{
			{Name: "sim-gpu-0", MemoryBytes: 24 * gib, H2DBytesPerS: 25e9, ComputeFactor: 1},
			{Name: "sim-gpu-1", MemoryBytes: 24 * gib, H2DBytesPerS: 25e9, ComputeFactor: 1},
		},
	}
}

func twoGPUs() []fakeGPU {
	return []fakeGPU{
		{name: "NVIDIA A", uuid: "GPU-a", total: 80 * gib, used: gib, free: 79 * gib, util: 50, temp: 60, gen: 4, width: 16},
		{name: "NVIDIA B", uuid: "GPU-b", total: 24 * gib, used: 2 * gib, free: 22 * gib, util: 0, temp: 35, gen: 3, width: 8},
	}
}

func TestOpenBackends(t *testing.T) {
	for _, tc := range []struct {
		name        string
		backend     string
		drv         *fakeDriver
		wantBackend string
		wantErr     error // nil: no error
		anyErr      bool
		wantLog     string
		wantInits   int
	}{
		{name: "sim", backend: "sim", drv: &fakeDriver{gpus: twoGPUs()}, wantBackend: "sim"},
		{name: "auto with gpus", backend: "auto", drv: &fakeDriver{gpus: twoGPUs()}, wantBackend: "nvml", wantInits: 1},
		{name: "nvml with gpus", backend: "nvml", drv: &fakeDriver{gpus: twoGPUs()}, wantBackend: "nvml", wantInits: 1},
		{
			name: "auto without library", backend: "auto",
			drv:         &fakeDriver{initErr: fmt.Errorf("nvml init: %w", ErrLibraryNotFound)},
			wantBackend: "sim",
			wantLog:     "no NVIDIA GPU found (nvml library not found), using simulated devices",
		},
		{
			name: "auto without driver", backend: "auto",
			drv:         &fakeDriver{initErr: fmt.Errorf("nvml init: %w", ErrDriverNotLoaded)},
			wantBackend: "sim",
			wantLog:     "no NVIDIA GPU found (nvidia driver not loaded), using simulated devices",
		},
		{
			name: "auto with init panic", backend: "auto",
			drv:         &fakeDriver{initPanic: "dlopen: boom"},
			wantBackend: "sim",
			wantLog:     "no NVIDIA GPU found (nvml library could not be loaded), using simulated devices",
		},
		{
			name: "auto with zero devices", backend: "auto", drv: &fakeDriver{},
			wantBackend: "sim", wantInits: 1,
			wantLog: "no NVIDIA GPU found (nvml reports 0 devices), using simulated devices",
		},
		{
			name: "nvml without library", backend: "nvml",
			drv:     &fakeDriver{initErr: fmt.Errorf("nvml init: %w", ErrLibraryNotFound)},
			wantErr: ErrLibraryNotFound,
		},
		{name: "nvml with zero devices", backend: "nvml", drv: &fakeDriver{}, anyErr: true, wantInits: 1},
		{name: "auto with other init error", backend: "auto", drv: &fakeDriver{initErr: errors.New("nvml init: no permission")}, anyErr: true},
		{name: "auto with count error", backend: "auto", drv: &fakeDriver{gpus: twoGPUs(), countErr: errors.New("boom")}, anyErr: true, wantInits: 1},
		{name: "unknown backend", backend: "cuda", drv: &fakeDriver{}, anyErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			set, err := Open(simConfig(tc.backend), zerolog.New(&logs), WithDriver(tc.drv))
			if tc.wantErr != nil || tc.anyErr {
				if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
					t.Fatalf("Open err = %v; want %v", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if set.Backend() != tc.wantBackend {
					t.Errorf("Backend() = %q; want %q", set.Backend(), tc.wantBackend)
				}
				if err := set.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				if err := set.Close(); err != nil {
					t.Errorf("second Close: %v", err)
				}
			}
			if tc.drv.inits != tc.wantInits || tc.drv.shutdowns != tc.drv.inits {
				t.Errorf("inits, shutdowns = %d, %d; want %d each", tc.drv.inits, tc.drv.shutdowns, tc.wantInits)
			}
			if tc.wantLog != "" {
				lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
				if len(lines) != 1 || !strings.Contains(lines[0], tc.wantLog) || !strings.Contains(lines[0], `"level":"info"`) {
					t.Errorf("log = %q; want one info line with %q", logs.String(), tc.wantLog)
				}
			}
		})
	}
}

func TestOpenRealNVMLFallsBack(t *testing.T) {
	set, err := Open(simConfig("auto"), zerolog.Nop())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer set.Close()
	if set.Backend() == BackendNVML {
		t.Skip("this machine has an NVIDIA GPU")
	}
	if n := len(set.Devices()); n != 2 {
		t.Errorf("%d devices; want the 2 simulated ones", n)
	}
}

func TestNVMLInfo(t *testing.T) {
	gpus := twoGPUs()
	gpus[1].nameErr = fmt.Errorf("name: %w", ErrNotSupported)
	gpus[1].pcieErr = fmt.Errorf("pcie: %w", ErrNotSupported)
	set, err := Open(simConfig("nvml"), zerolog.Nop(), WithDriver(&fakeDriver{gpus: gpus}))
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	want := []Info{
		{Index: 0, Name: "NVIDIA A", UUID: "GPU-a", MemoryBytes: 80 * gib, H2DBytesPerS: 1.969e9 * 16 * 0.8, ComputeFactor: 1, Backend: "nvml"},
		{Index: 1, Name: "gpu-1", UUID: "GPU-b", MemoryBytes: 24 * gib, H2DBytesPerS: DefaultH2DBytesPerS, ComputeFactor: 1, Backend: "nvml"},
	}
	for i, d := range set.Devices() {
		t.Run(want[i].Name, func(t *testing.T) {
			if got := d.Info(); got != want[i] {
				t.Errorf("Info() = %+v; want %+v", got, want[i])
			}
			if set.Ledger(i).Total() != want[i].MemoryBytes {
				t.Errorf("ledger total = %d", set.Ledger(i).Total())
			}
		})
	}
	if set.Ledger(2) != nil || set.Ledger(-1) != nil || set.Device(2) != nil {
		t.Error("out-of-range index returned a ledger or device")
	}
}

func TestNVMLSample(t *testing.T) {
	notSupported := fmt.Errorf("x: %w", ErrNotSupported)
	for _, tc := range []struct {
		name         string
		gpu          fakeGPU
		wantErr      bool
		wantDegraded string // "" = not degraded
		check        func(t *testing.T, s Sample)
	}{
		{
			name: "all fields",
			gpu:  fakeGPU{total: 10, used: 4, free: 6, util: 70, temp: 65, reasons: reasonGPUIdle | reasonSWPowerCap},
			check: func(t *testing.T, s Sample) {
				if *s.MemoryUsed != 4 || *s.MemoryFree != 6 || *s.UtilizationGPU != 70 || *s.TemperatureC != 65 || *s.ECCErrors != 0 {
					t.Errorf("sample = %+v", s)
				}
				if fmt.Sprint(s.ThrottleReasons) != "[sw_power_cap]" {
					t.Errorf("ThrottleReasons = %v", s.ThrottleReasons)
				}
			},
		},
		{
			name: "not supported fields are unknown",
			gpu:  fakeGPU{total: 10, util: 5, utilErr: notSupported, tempErr: notSupported, eccErr: notSupported, reasonsErr: notSupported},
			check: func(t *testing.T, s Sample) {
				if s.MemoryUsed == nil || s.UtilizationGPU != nil || s.TemperatureC != nil || s.ECCErrors != nil || s.ThrottleReasons != nil {
					t.Errorf("sample = %+v", s)
				}
			},
		},
		{name: "thermal throttling degrades", gpu: fakeGPU{total: 10, reasons: reasonHWThermalSlowdown}, wantDegraded: "throttled (hw_thermal_slowdown)"},
		{name: "ecc errors degrade", gpu: fakeGPU{total: 10, ecc: 3}, wantDegraded: "3 uncorrected ecc errors"},
		{
			name: "gpu lost", gpu: fakeGPU{total: 10, tempErr: fmt.Errorf("temp: %w", ErrGPULost)},
			wantErr: true, wantDegraded: "gpu is lost",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drv := &fakeDriver{gpus: []fakeGPU{tc.gpu}}
			if err := drv.Init(); err != nil {
				t.Fatal(err)
			}
			d := &nvmlDevice{info: Info{Index: 0, Name: "x"}, drv: drv}
			s, err := d.Sample()
			if (err != nil) != tc.wantErr {
				t.Errorf("Sample err = %v; wantErr %v", err, tc.wantErr)
			}
			if s.Degraded != (tc.wantDegraded != "") || s.DegradedReason != tc.wantDegraded {
				t.Errorf("Degraded, reason = %v, %q; want %q", s.Degraded, s.DegradedReason, tc.wantDegraded)
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func TestThrottleReasonNames(t *testing.T) {
	for _, tc := range []struct {
		mask uint64
		want string
	}{
		{0, "[]"},
		{reasonGPUIdle, "[]"},
		{reasonSWPowerCap | reasonHWSlowdown, "[sw_power_cap hw_slowdown]"},
		{1 << 20, "[0x100000]"},
	} {
		t.Run(fmt.Sprint(tc.mask), func(t *testing.T) {
			if got := fmt.Sprint(ThrottleReasonNames(tc.mask)); got != tc.want {
				t.Errorf("ThrottleReasonNames(%#x) = %s; want %s", tc.mask, got, tc.want)
			}
		})
	}
}

func TestEstimateH2D(t *testing.T) {
	for _, tc := range []struct {
		gen, width int
		want       float64
	}{
		{4, 16, 1.969e9 * 16 * 0.8},
		{3, 16, 0.985e9 * 16 * 0.8},
		{0, 16, DefaultH2DBytesPerS},
		{9, 16, DefaultH2DBytesPerS},
		{4, 0, DefaultH2DBytesPerS},
	} {
		t.Run(fmt.Sprint(tc.gen, "x", tc.width), func(t *testing.T) {
			if got := EstimateH2D(tc.gen, tc.width); got != tc.want {
				t.Errorf("EstimateH2D = %v; want %v", got, tc.want)
			}
		})
	}
}

func TestSimTracksLedger(t *testing.T) {
	set, err := Open(simConfig("sim"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	d := set.Devices()[0].(*SimDevice)
	if _, err := set.Ledger(0).Reserve("w0.0", "checkpoints/a", 6*gib); err != nil {
		t.Fatal(err)
	}
	d.SetBusy(0.25)
	s, err := d.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if *s.MemoryUsed != 6*gib || *s.MemoryFree != 18*gib || *s.UtilizationGPU != 25 || *s.TemperatureC != 40 || s.Degraded {
		t.Errorf("sample = %+v", s)
	}
	if info := d.Info(); !info.Simulated || info.Backend != "sim" || info.Name != "sim-gpu-0" {
		t.Errorf("Info() = %+v", info)
	}
	for _, tc := range []struct {
		in   float64
		want uint32
	}{{-1, 0}, {2, 100}, {0.5, 50}} {
		d.SetBusy(tc.in)
		if s, _ := d.Sample(); *s.UtilizationGPU != tc.want {
			t.Errorf("SetBusy(%v): utilization %d; want %d", tc.in, *s.UtilizationGPU, tc.want)
		}
	}
}

func TestDescribeJSON(t *testing.T) {
	set, err := Open(simConfig("sim"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if _, err := set.Ledger(1).Reserve("w1.0", "m", gib); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(set.Describe()[1])
	if err != nil {
		t.Fatal(err)
	}
	want := `{"index":1,"name":"sim-gpu-1","uuid":"sim-sim-gpu-1","backend":"sim","simulated":true,` +
		`"memory_total":25769803776,"memory_used":1073741824,"memory_free":24696061952,"reserved":1073741824,` +
		`"usable":20615843020,"utilization":0,"temperature_c":40,"throttle_reasons":[],"degraded":false,"degraded_reason":""}`
	if string(b) != want {
		t.Errorf("Describe JSON =\n%s\nwant\n%s", b, want)
	}
}

func TestDescribeNVMLFailure(t *testing.T) {
	gpus := twoGPUs()
	gpus[0].utilErr = errors.New("nvml utilization: unknown error")
	set, err := Open(simConfig("nvml"), zerolog.Nop(), WithDriver(&fakeDriver{gpus: gpus}))
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	st := set.Describe()
	if !st[0].Degraded || st[0].Utilization != nil || st[0].TemperatureC == nil {
		t.Errorf("status 0 = %+v; want degraded, no utilization, a temperature", st[0])
	}
	if st[1].Degraded || st[1].Backend != "nvml" || st[1].Simulated {
		t.Errorf("status 1 = %+v", st[1])
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(c *Config)
		wantErr string
	}{
		{name: "default ok", mutate: func(*Config) {}},
		{name: "bad backend", mutate: func(c *Config) { c.Backend = "cuda" }, wantErr: `devices.backend: "cuda" is not one of auto, nvml, sim`},
		{name: "headroom 1", mutate: func(c *Config) { c.Headroom = 1 }, wantErr: "devices.headroom: 1 is outside [0, 1)"},
		{name: "headroom negative", mutate: func(c *Config) { c.Headroom = -0.1 }, wantErr: "devices.headroom"},
		{name: "no sim devices", mutate: func(c *Config) { c.Simulated = nil }, wantErr: "devices.simulated: backend auto needs"},
		{name: "no sim devices with nvml", mutate: func(c *Config) { c.Backend, c.Simulated = "nvml", nil }},
		{name: "empty name", mutate: func(c *Config) { c.Simulated[1].Name = "" }, wantErr: "devices.simulated[1].name: must not be empty"},
		{name: "duplicate name", mutate: func(c *Config) { c.Simulated[1].Name = "sim-gpu-0" }, wantErr: `devices.simulated[1].name: "sim-gpu-0" is already used by devices.simulated[0]`},
		{name: "zero memory", mutate: func(c *Config) { c.Simulated[0].MemoryBytes = 0 }, wantErr: "devices.simulated[0].memory_bytes: must be > 0"},
		{name: "zero h2d", mutate: func(c *Config) { c.Simulated[0].H2DBytesPerS = 0 }, wantErr: "devices.simulated[0].h2d_bytes_per_s"},
		{name: "zero compute", mutate: func(c *Config) { c.Simulated[0].ComputeFactor = 0 }, wantErr: "devices.simulated[0].compute_factor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := simConfig("auto")
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate err = %v; want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestSetDegraded(t *testing.T) {
	gpus := twoGPUs()
	gpus[1].reasons = reasonSWThermalSlowdown
	set, err := Open(simConfig("nvml"), zerolog.Nop(), WithDriver(&fakeDriver{gpus: gpus}))
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for _, tc := range []struct {
		index int
		want  bool
	}{{0, false}, {1, true}, {2, false}, {-1, false}} {
		t.Run(fmt.Sprint(tc.index), func(t *testing.T) {
			if got := set.Degraded(tc.index); got != tc.want {
				t.Errorf("Degraded(%d) = %v; want %v", tc.index, got, tc.want)
			}
		})
	}
}
