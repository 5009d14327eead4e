package cost

import (
	"math"
	"strings"
	"testing"
	"time"
)

// within reports whether got is within tol of want.
func within(got, want, tol time.Duration) bool {
	d := got - want
	return d >= -tol && d <= tol
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func TestDefaultValidates(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Fatalf("Config{}.WithDefaults().Validate() = %v", err)
	}
}

// TestJobEstimateMatchesPublished checks that a text-to-image estimate on
// the reference GPU reproduces the end-to-end times of COSTS.md.
func TestJobEstimateMatchesPublished(t *testing.T) {
	ref := Device{H2DBytesPerS: 25.13e9, ComputeFactor: 1}
	for _, tc := range []struct {
		name string
		work Work
		want time.Duration
	}{
		{"sd15 512² 50 steps (FAL 1.591 s)", TextToImage("sd15", 50, 512, 512, 1), 1591 * time.Millisecond},
		{"sdxl 1024² 30 steps (PTB 3.31 s)", TextToImage("sdxl", 30, 1024, 1024, 1), 3310 * time.Millisecond},
		{"sd3 1024² 28 steps (SD3 4.762 s)", TextToImage("sd3", 28, 1024, 1024, 1), 4762 * time.Millisecond},
		{"flux 1024² 28 steps (BFX 15.65 s)", Work{
			Family: "flux", TextEncodes: 1,
			Samplers: []Sample{{Steps: 28, Width: 1024, Height: 1024, Batch: 1}},
			Decodes:  []Image{{Width: 1024, Height: 1024, Batch: 1}},
		}, 15650 * time.Millisecond},
		{"alias SD1.5", TextToImage("SD1.5", 50, 512, 512, 1), 1591 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Default().JobEstimate(tc.work, ref)
			if !within(got, tc.want, time.Millisecond) {
				t.Errorf("JobEstimate = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStepTime(t *testing.T) {
	c := Default()
	for _, tc := range []struct {
		name        string
		family      string
		w, h, batch int
		dev         Device
		scale       float64
		want        time.Duration // ± 1%
	}{
		{name: "sdxl reference", family: "sdxl", w: 1024, h: 1024, batch: 1, want: 100300 * time.Microsecond},
		{name: "sd15 reference", family: "sd15", w: 512, h: 512, batch: 1, want: 29860 * time.Microsecond},
		{name: "flux on H100 (factor 2.2)", family: "flux", w: 1024, h: 1024, batch: 1,
			dev: Device{ComputeFactor: 2.2}, want: 253115260 * time.Nanosecond},
		{name: "time scale 0.1", family: "sdxl", w: 1024, h: 1024, batch: 1, scale: 0.1, want: 10030 * time.Microsecond},
		// 4× pixels cost 4^0.70 = 2.64× (A11 SD1.x 512² → 1024²).
		{name: "sd15 at 1024²", family: "sd15", w: 1024, h: 1024, batch: 1,
			want: secs(0.02986 * math.Pow(4, 0.7))},
		// Batch 8 at 512²: 8 / 2.25 = 3.56× one image's step.
		{name: "sd15 batch 8", family: "sd15", w: 512, h: 512, batch: 8,
			want: secs(0.02986 * 8 / 2.25)},
		// Batch 8 at 1024²: 8 / 1.13 = 7.08×.
		{name: "sdxl batch 8", family: "sdxl", w: 1024, h: 1024, batch: 8,
			want: secs(0.1003 * 8 / 1.13)},
		{name: "unknown family falls back to sdxl", family: "hunyuan", w: 1024, h: 1024, batch: 1, want: 100300 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := c
			if tc.scale != 0 {
				cc.TimeScale = tc.scale
			}
			got := cc.StepTime(tc.family, tc.w, tc.h, tc.batch, tc.dev)
			if !within(got, tc.want, tc.want/100) {
				t.Errorf("StepTime = %v, want %v ± 1%%", got, tc.want)
			}
		})
	}
}

func TestBatchFactor(t *testing.T) {
	c := Default()
	for _, tc := range []struct {
		pixels, batch int
		wantGain      float64 // throughput gain = batch / factor
	}{
		{512 * 512, 1, 1},
		{512 * 512, 8, 2.25},
		{256 * 256, 8, 2.25}, // held below the small size
		{1024 * 1024, 8, 1.13},
		{2048 * 2048, 8, 1.13}, // held above the large size
	} {
		got := float64(tc.batch) / c.BatchFactor(tc.pixels, tc.batch)
		if math.Abs(got-tc.wantGain) > 1e-9 {
			t.Errorf("gain(%d px, batch %d) = %v, want %v", tc.pixels, tc.batch, got, tc.wantGain)
		}
	}
	// In between, the gain falls monotonically and batching never costs
	// more than running the images one by one.
	prev := math.Inf(1)
	for px := 512 * 512; px <= 1024*1024; px += 64 * 1024 {
		f := c.BatchFactor(px, 8)
		gain := 8 / f
		if gain > prev+1e-12 || f > 8 || f < 1 {
			t.Fatalf("BatchFactor(%d, 8) = %v (gain %v after %v)", px, f, gain, prev)
		}
		prev = gain
	}
}

func TestLoadTime(t *testing.T) {
	c := Default()
	const sdxlBytes = 6_940_000_000 // sd_xl_base_1.0
	for _, tc := range []struct {
		name  string
		bytes int64
		dev   Device
		scale float64
		want  time.Duration
	}{
		// 6.94 GB / 1.7 GB/s + 0.5 s + 6.94 GB / (25.13 GB/s × 0.5).
		{name: "sdxl reference", bytes: sdxlBytes,
			want: secs(6.94/1.7 + 0.5 + 6.94/12.565)},
		// The compute factor does not speed up a load; the H2D bandwidth does.
		{name: "sdxl H100", bytes: sdxlBytes, dev: Device{H2DBytesPerS: 35.2e9, ComputeFactor: 2.2},
			want: secs(6.94/1.7 + 0.5 + 6.94/17.6)},
		{name: "scaled", bytes: sdxlBytes, scale: 0.01,
			want: secs((6.94/1.7 + 0.5 + 6.94/12.565) * 0.01)},
		{name: "empty file pays the overhead", bytes: 0, want: 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := c
			if tc.scale != 0 {
				cc.TimeScale = tc.scale
			}
			got := cc.LoadTime("sdxl", tc.bytes, tc.dev)
			if !within(got, tc.want, time.Millisecond/10) {
				t.Errorf("LoadTime = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMemory(t *testing.T) {
	c := Default()
	if got := VRAMBytes("sdxl", 6_940_000_000); got != 6_940_000_000 {
		t.Errorf("VRAMBytes = %d", got)
	}
	if got := VRAMBytes("sdxl", -1); got != 0 {
		t.Errorf("VRAMBytes(-1) = %d", got)
	}
	// HFX: 4 SDXL images at 1024² peak at 21.72 GB with 6.94 GB of weights.
	total := VRAMBytes("sdxl", 6_940_000_000) + c.ActivationBytes("sdxl", 1024, 1024, 4)
	if math.Abs(float64(total)-21.72e9) > 1e6 {
		t.Errorf("SDXL 4×1024² total = %d, want 21.72e9", total)
	}
	// SD3: 18.77 GB with 15.8 GB of weights.
	total = VRAMBytes("sd3", 15_800_000_000) + c.ActivationBytes("sd3", 1024, 1024, 1)
	if math.Abs(float64(total)-18.77e9) > 1e6 {
		t.Errorf("SD3 1024² total = %d, want 18.77e9", total)
	}
}

func TestOtherStages(t *testing.T) {
	c := Default()
	for _, tc := range []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"sdxl decode 1024²", c.DecodeTime("sdxl", 1024, 1024, 1, Device{}), 240 * time.Millisecond},
		{"sdxl decode 2 × 1024²", c.DecodeTime("sdxl", 1024, 1024, 2, Device{}), 480 * time.Millisecond},
		{"sd15 decode 512²", c.DecodeTime("sd15", 512, 512, 1, Device{}), 37 * time.Millisecond},
		{"flux decode 1024²", c.DecodeTime("flux", 1024, 1024, 1, Device{}), 27600 * time.Microsecond},
		{"text encode", c.TextEncodeTime("sdxl", Device{}), 30500 * time.Microsecond},
		{"text encode at 2×", c.TextEncodeTime("sdxl", Device{ComputeFactor: 2}), 15250 * time.Microsecond},
		{"sd15 lora", c.LoRAApplyTime("sd15", Device{}), 5372065 * time.Nanosecond},
		{"upscale 2048²", c.UpscaleTime(2048, 2048, 1, Device{}), 400 * time.Millisecond},
		{"no steps", c.SampleTime("sdxl", 0, 1024, 1024, 1, Device{}), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !within(tc.got, tc.want, time.Microsecond) {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"time scale", func(c *Config) { c.TimeScale = -1 }, "cost.time_scale: must be > 0"},
		{"nan time scale", func(c *Config) { c.TimeScale = math.NaN() }, "cost.time_scale: must be > 0"},
		{"disk", func(c *Config) { c.DiskBytesPerS = -5 }, "cost.disk_bytes_per_s: must be > 0"},
		{"pageable", func(c *Config) { c.PageableFactor = 2 }, "cost.pageable_factor: must be in (0, 1]"},
		{"gain", func(c *Config) { c.Batch.SmallGain8 = 9 }, "cost.batch.small_gain8: must be in [1, 8]"},
		{"pixels order", func(c *Config) { c.Batch.LargePixels = 1 }, "cost.batch.large_pixels: must be > batch.small_pixels"},
		{"fallback", func(c *Config) { c.FallbackFamily = "nope" }, `cost.fallback_family: "nope" is not in cost.families`},
		{"family step", func(c *Config) {
			f := c.Families["sdxl"]
			f.StepSeconds = 0
			c.Families["sdxl"] = f
		}, "cost.families.sdxl.step_seconds: must be > 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      map[string]any
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "empty gives defaults", in: nil, check: func(t *testing.T, c Config) {
			if c.TimeScale != 1 || c.Families["sdxl"] != Default().Families["sdxl"] {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "msgpack-style small ints", in: map[string]any{"time_scale": int8(2), "pixel_exponent": float32(1)},
			check: func(t *testing.T, c Config) {
				if c.TimeScale != 2 || c.PixelExponent != 1 {
					t.Errorf("got scale %v exponent %v", c.TimeScale, c.PixelExponent)
				}
			}},
		{name: "partial family keeps its other defaults", in: map[string]any{
			"families": map[string]any{"sdxl": map[string]any{"step_seconds": 0.2}},
		}, check: func(t *testing.T, c Config) {
			f := c.Families["sdxl"]
			if f.StepSeconds != 0.2 || f.DecodeSecondsPerMP != Default().Families["sdxl"].DecodeSecondsPerMP || f.RefWidth != 1024 {
				t.Errorf("sdxl = %+v", f)
			}
			if c.Families["flux"] != Default().Families["flux"] {
				t.Errorf("flux changed: %+v", c.Families["flux"])
			}
		}},
		{name: "new family starts from the fallback", in: map[string]any{
			"families": map[string]any{"Hunyuan": map[string]any{"step_seconds": 1.5}},
		}, check: func(t *testing.T, c Config) {
			f, known := c.Lookup("hunyuan")
			if !known || f.StepSeconds != 1.5 || f.RefWidth != 1024 {
				t.Errorf("hunyuan = %+v, known %v", f, known)
			}
		}},
		{name: "unknown key", in: map[string]any{"time_scael": 1}, wantErr: "time_scael"},
		{name: "invalid value", in: map[string]any{"time_scale": -1}, wantErr: "cost.time_scale: must be > 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Decode(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Decode() = %v, want error %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode() = %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestMapRoundTrip(t *testing.T) {
	c := Default()
	c.TimeScale = 0.25
	got, err := Decode(c.Map())
	if err != nil {
		t.Fatalf("Decode(Map()) = %v", err)
	}
	if got.TimeScale != 0.25 || got.Batch != c.Batch || len(got.Families) != len(c.Families) {
		t.Fatalf("round trip = %+v", got)
	}
	for name, f := range c.Families {
		if got.Families[name] != f {
			t.Errorf("family %s = %+v, want %+v", name, got.Families[name], f)
		}
	}
}

func TestDeterministic(t *testing.T) {
	c := Default()
	w := TextToImage("sdxl", 25, 1152, 768, 3)
	first := c.JobEstimate(w, Device{ComputeFactor: 1.3})
	for i := 0; i < 100; i++ {
		if got := c.JobEstimate(w, Device{ComputeFactor: 1.3}); got != first {
			t.Fatalf("run %d: %v != %v", i, got, first)
		}
	}
}

func TestStreamTime(t *testing.T) {
	c := Default()
	// 5 GB streamed over the A100's 25.13 GB/s pinned link, 28 steps.
	got := c.StreamTime(5e9, 28, Device{})
	if want := secs(28 * 5e9 / refH2D); got < want-time.Millisecond || got > want+time.Millisecond {
		t.Errorf("StreamTime = %v, want %v", got, want)
	}
	if fast := c.StreamTime(5e9, 28, Device{H2DBytesPerS: 2 * refH2D}); fast >= got || fast < got/2-time.Millisecond {
		t.Errorf("twice the bandwidth: %v vs %v", fast, got)
	}
	for _, tc := range []struct {
		bytes int64
		steps int
	}{{0, 28}, {-1, 28}, {5e9, 0}} {
		if d := c.StreamTime(tc.bytes, tc.steps, Device{}); d != 0 {
			t.Errorf("StreamTime(%d, %d) = %v, want 0", tc.bytes, tc.steps, d)
		}
	}
	c.TimeScale = 0.5
	if half := c.StreamTime(5e9, 28, Device{}); half < got/2-time.Millisecond || half > got/2+time.Millisecond {
		t.Errorf("time_scale 0.5: %v vs %v", half, got)
	}
}
