package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Workload kinds of Generate.
const (
	KindZipf    = "zipf"
	KindBursty  = "bursty"
	KindDiurnal = "diurnal"
)

// GenConfig describes a synthetic workload. Zero fields take the defaults
// of GenConfig.withDefaults.
type GenConfig struct {
	// Kind is zipf (Poisson arrivals), bursty (on/off) or diurnal (a sine
	// over Period). Every kind draws checkpoints by Zipf popularity.
	Kind string
	// Jobs is the number of requests (default 1000).
	Jobs int
	// Rate is the mean arrival rate in jobs per second (default 1).
	Rate float64
	// Checkpoints is the number of distinct base models (default 20).
	Checkpoints int
	// ZipfS is the Zipf exponent of checkpoint popularity (default 1.0;
	// 0 would be uniform, so use a tiny value such as 0.01 for that).
	ZipfS float64
	// Drift rotates the popularity ranking by one place every Drift of
	// trace time (0: no drift).
	Drift time.Duration
	// LoRAProb, ControlNetProb and UpscaleProb are the chances that a job
	// adds a LoRA, a ControlNet or an upscaler (defaults 0.3, 0.1, 0.1).
	LoRAProb, ControlNetProb, UpscaleProb float64
	// InteractiveFrac is the share of interactive jobs (default 0.5).
	InteractiveFrac float64
	// DeadlineMS is the deadline of interactive jobs (default 30000; batch
	// jobs get none).
	DeadlineMS int64
	// BurstFactor, On and Off shape bursty traffic: rate×BurstFactor during
	// on periods, rate/BurstFactor during off periods, each of exponential
	// length with means On and Off (defaults 4, 60 s, 240 s).
	BurstFactor float64
	On, Off     time.Duration
	// BurstLow, when positive, sets the off periods' rate to rate×BurstLow
	// instead of rate/BurstFactor, so that bursts and lulls can be shaped
	// apart (the experiments' workloads use ×1.8 and ×0.3).
	BurstLow float64
	// Period and Amplitude shape diurnal traffic (defaults 1 h, 0.8).
	Period    time.Duration
	Amplitude float64
	// Seed seeds every draw.
	Seed uint64

	// times, for the importers (kindTimes), are given arrival times.
	times []time.Duration
}

// kindTimes draws models and classes for arrival times an importer read.
const kindTimes = "times"

func (c GenConfig) withDefaults() GenConfig {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Kind == "" {
		c.Kind = KindZipf
	}
	if c.Jobs == 0 {
		c.Jobs = 1000
	}
	if c.Checkpoints == 0 {
		c.Checkpoints = 20
	}
	def(&c.Rate, 1)
	def(&c.ZipfS, 1)
	def(&c.LoRAProb, 0.3)
	def(&c.ControlNetProb, 0.1)
	def(&c.UpscaleProb, 0.1)
	def(&c.InteractiveFrac, 0.5)
	def(&c.BurstFactor, 4)
	def(&c.Amplitude, 0.8)
	if c.DeadlineMS == 0 {
		c.DeadlineMS = 30000
	}
	if c.On == 0 {
		c.On = time.Minute
	}
	if c.Off == 0 {
		c.Off = 4 * time.Minute
	}
	if c.Period == 0 {
		c.Period = time.Hour
	}
	return c
}

// checkpointMix is the family and name pattern of generated checkpoints,
// in turn: the sizes come from modelfile.NominalSize.
var checkpointMix = []struct{ family, tag string }{
	{workflow.FamilySD15, "sd15"},
	{workflow.FamilySDXL, "sdxl"},
	{workflow.FamilySDXL, "sdxl"},
	{workflow.FamilySD3, "sd3_clips"},
	{workflow.FamilyFlux, "flux_fp8"},
	{workflow.FamilySD15, "sd15"},
	{workflow.FamilySDXL, "sdxl"},
	{workflow.FamilyFlux, "flux"},
}

// Catalog returns a realistic model table: n checkpoints over the families
// of checkpointMix and, for each family, LoRAs (40–800 MB), a VAE
// (160–335 MB), a ControlNet (0.7–2.5 GB) and one upscaler (≈ 64 MB).
func Catalog(n int, seed uint64) []Model {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var out []Model
	add := func(family, id string, bytes int64) {
		out = append(out, Model{ID: id, Bytes: bytes, Family: family})
	}
	jitter := func(b int64, lo, hi int64) int64 {
		v := int64(float64(b) * (0.5 + r.Float64()*1.5))
		return max(lo, min(hi, v))
	}
	for i := 0; i < n; i++ {
		mix := checkpointMix[i%len(checkpointMix)]
		name := fmt.Sprintf("%s-%02d.safetensors", mix.tag, i)
		add(mix.family, "checkpoints/"+name, modelfile.NominalSize(mix.family, name))
	}
	for _, fam := range []string{workflow.FamilySD15, workflow.FamilySDXL, workflow.FamilySD3, workflow.FamilyFlux} {
		for k := 0; k < 3; k++ {
			name := fmt.Sprintf("%s-style-%d.safetensors", fam, k)
			if fam != workflow.FamilySD15 {
				name = fmt.Sprintf("%s-xl-style-%d.safetensors", fam, k)
			}
			add(workflow.FamilyLoRA, "loras/"+name, jitter(modelfile.NominalSize(workflow.FamilyLoRA, name), 40e6, 800e6))
		}
		vae := fam + "-vae.safetensors"
		vb := modelfile.NominalSize(workflow.FamilyVAE, vae)
		if fam == workflow.FamilySD15 {
			vb = 160e6 // SD1.5 VAE halves (vae-ft-mse fp16) are about 160 MB
		}
		add(workflow.FamilyVAE, "vae/"+vae, vb)
		cn := fam + "-canny.safetensors"
		if fam != workflow.FamilySD15 {
			cn = fam + "-xl-canny.safetensors"
		}
		add(workflow.FamilyControlNet, "controlnet/"+cn, modelfile.NominalSize(workflow.FamilyControlNet, cn))
	}
	add(workflow.FamilyUpscaler, "upscale_models/RealESRGAN_x4plus.pth", modelfile.NominalSize(workflow.FamilyUpscaler, "RealESRGAN_x4plus.pth"))
	return out
}

// Generate returns a catalog and a trace of cfg's kind.
func Generate(cfg GenConfig) ([]Model, []Request, error) {
	cfg = cfg.withDefaults()
	switch cfg.Kind {
	case KindZipf, KindBursty, KindDiurnal, kindTimes:
	default:
		return nil, nil, fmt.Errorf("sim: generate: unknown kind %q (want zipf, bursty or diurnal)", cfg.Kind)
	}
	if cfg.Rate <= 0 || cfg.Jobs < 0 || cfg.Checkpoints < 1 || cfg.ZipfS < 0 {
		return nil, nil, fmt.Errorf("sim: generate: rate, jobs, checkpoints and zipf exponent must be positive")
	}
	models := Catalog(cfg.Checkpoints, cfg.Seed)
	r := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed+1))
	byFamily := func(family, prefix string) map[string][]string {
		out := map[string][]string{}
		for _, m := range models {
			if m.Family == family {
				for _, f := range []string{workflow.FamilySD15, workflow.FamilySDXL, workflow.FamilySD3, workflow.FamilyFlux} {
					if len(m.ID) > len(prefix)+len(f) && m.ID[len(prefix):len(prefix)+len(f)] == f {
						out[f] = append(out[f], m.ID)
					}
				}
			}
		}
		return out
	}
	loras := byFamily(workflow.FamilyLoRA, "loras/")
	cns := byFamily(workflow.FamilyControlNet, "controlnet/")
	var ckpts []Model
	var upscaler string
	for _, m := range models {
		switch {
		case m.Family == workflow.FamilyUpscaler:
			upscaler = m.ID
		case len(m.ID) > 12 && m.ID[:12] == "checkpoints/":
			ckpts = append(ckpts, m)
		}
	}
	// Zipf popularity over ranks: P(rank k) ∝ 1/(k+1)^s.
	cdf := make([]float64, len(ckpts))
	var sum float64
	for k := range ckpts {
		sum += 1 / math.Pow(float64(k+1), cfg.ZipfS)
		cdf[k] = sum
	}
	// A seeded permutation maps ranks to checkpoints, so the most popular
	// model is not always the first of the catalog.
	perm := r.Perm(len(ckpts))

	reqs := make([]Request, 0, cfg.Jobs)
	var t float64 // seconds
	on, phaseEnd := true, expo(r, cfg.On.Seconds())
	for len(reqs) < cfg.Jobs {
		switch cfg.Kind {
		case kindTimes:
			t = cfg.times[len(reqs)].Seconds()
		case KindZipf:
			t += expo(r, 1/cfg.Rate)
		case KindBursty:
			rate := cfg.Rate * cfg.BurstFactor
			if !on {
				rate = cfg.Rate / cfg.BurstFactor
				if cfg.BurstLow > 0 {
					rate = cfg.Rate * cfg.BurstLow
				}
			}
			t += expo(r, 1/rate)
			for t > phaseEnd {
				on = !on
				mean := cfg.On.Seconds()
				if !on {
					mean = cfg.Off.Seconds()
				}
				phaseEnd += expo(r, mean)
			}
		case KindDiurnal:
			// Thinning (Lewis–Shedler) of a Poisson process at the peak rate.
			peak := cfg.Rate * (1 + cfg.Amplitude)
			for {
				t += expo(r, 1/peak)
				rate := cfg.Rate * (1 + cfg.Amplitude*math.Sin(2*math.Pi*t/cfg.Period.Seconds()))
				if r.Float64()*peak <= rate {
					break
				}
			}
		}
		at := time.Duration(math.Round(t*1000)) * time.Millisecond
		rank := sort.SearchFloat64s(cdf, r.Float64()*sum)
		rank = min(rank, len(ckpts)-1)
		shift := 0
		if cfg.Drift > 0 {
			shift = int(at / cfg.Drift)
		}
		ck := ckpts[perm[(rank+shift)%len(ckpts)]]
		req := Request{Time: at, Models: []string{ck.ID}, Class: job.Batch}
		fam := ck.Family
		if r.Float64() < cfg.LoRAProb && len(loras[fam]) > 0 {
			req.Models = append(req.Models, loras[fam][r.IntN(len(loras[fam]))])
		}
		if r.Float64() < cfg.ControlNetProb && len(cns[fam]) > 0 {
			req.Models = append(req.Models, cns[fam][0])
		}
		if r.Float64() < cfg.UpscaleProb && upscaler != "" {
			req.Models = append(req.Models, upscaler)
		}
		if r.Float64() < cfg.InteractiveFrac {
			req.Class, req.DeadlineMS = job.Interactive, cfg.DeadlineMS
		}
		reqs = append(reqs, req)
	}
	return models, reqs, nil
}

// expo draws an exponential variate of the given mean.
func expo(r *rand.Rand, mean float64) float64 { return r.ExpFloat64() * mean }
