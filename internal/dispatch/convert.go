package dispatch

import (
	"slices"
	"sort"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/tier"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// safetensorsDType is the safetensors dtype a conversion target stores
// weights in: what a converted model's footprint is computed from.
var safetensorsDType = map[string]string{
	sdk.DTypeFP16: "F16", sdk.DTypeBF16: "BF16", sdk.DTypeFP8E4M3: "F8_E4M3",
}

// convertedEntry is e as it will be once its file is converted to dtype:
// its sizes scaled by the conversion, its dtype the target's.
func convertedEntry(e catalog.Entry, dtype string) catalog.Entry {
	scale := func(b int64) int64 { return tier.ConvertedBytes(b, e.DType, dtype) }
	e.VRAMBytes, e.LoaderVRAMBytes = scale(e.VRAMBytes), scale(e.LoaderVRAMBytes)
	e.NominalBytes, e.Bytes = scale(e.NominalBytes), scale(e.Bytes)
	e.DType = safetensorsDType[dtype]
	return e
}

// converts reports whether converting e to dtype is possible (a loader
// that converts reads it) and worth it (the weights shrink).
func (d *Dispatcher) converts(e catalog.Entry, dtype string) bool {
	if d.opts.Tiers == nil || d.opts.Catalog == nil || d.opts.Catalog.ConverterFor(e.ID) == nil {
		return false
	}
	b := max(e.LoaderVRAMBytes, e.VRAMBytes)
	return b > 0 && tier.ConvertedBytes(b, e.DType, dtype) < b
}

// convertPlan applies tiers.convert to a plan (docs/stages.md,
// "Conversion to fit"): the models its rules name are converted, and, with
// to_fit set, when the plan's largest stage fits no device the largest
// models of each stage too large are converted, largest first, until the
// stage fits or nothing is left to convert. A converted model's footprint
// is that of its converted file, cast as the graph's loader asks.
func (d *Dispatcher) convertPlan(p Plan) Plan {
	if d.opts.Tiers == nil || d.opts.Catalog == nil {
		return p
	}
	cfg := d.opts.Tiers.ConvertConfig()
	if len(cfg.Rules) == 0 && cfg.ToFit == "" {
		return p
	}
	out := Plan{Stages: make([]PlanStage, len(p.Stages))}
	for k, s := range p.Stages {
		s.ModelBytes = slices.Clone(s.ModelBytes)
		s.ConvertTo = make([]string, len(s.Models))
		for i, m := range s.Models {
			e, err := d.opts.Catalog.Lookup(m)
			if err != nil {
				continue
			}
			if dt := cfg.Target(m, e.Family); dt != "" && d.converts(e, dt) {
				s.ConvertTo[i] = dt
				s.ModelBytes[i] = FootprintOf(convertedEntry(e, dt), weightDType(s, i))
			}
		}
		out.Stages[k] = s
	}
	if cfg.ToFit == "" {
		return out
	}
	_, room := d.room()
	if room == 0 || out.Peak() <= room {
		return out
	}
	// A model shared by stages is converted in all of them: the worker
	// holds one copy.
	convert := map[string]bool{}
	for k := range out.Stages {
		s := &out.Stages[k]
		order := make([]int, len(s.Models))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return s.ModelBytes[order[a]] > s.ModelBytes[order[b]] })
		for _, i := range order {
			if s.Bytes() <= room {
				break
			}
			if s.ConvertTo[i] != "" {
				continue
			}
			if e, err := d.opts.Catalog.Lookup(s.Models[i]); err == nil && d.converts(e, cfg.ToFit) {
				convert[s.Models[i]] = true
				s.ConvertTo[i] = cfg.ToFit
				s.ModelBytes[i] = FootprintOf(convertedEntry(e, cfg.ToFit), weightDType(*s, i))
			}
		}
	}
	for k := range out.Stages {
		s := &out.Stages[k]
		for i, m := range s.Models {
			if convert[m] && s.ConvertTo[i] == "" {
				if e, err := d.opts.Catalog.Lookup(m); err == nil {
					s.ConvertTo[i] = cfg.ToFit
					s.ModelBytes[i] = FootprintOf(convertedEntry(e, cfg.ToFit), weightDType(*s, i))
				}
			}
		}
	}
	return out
}

func weightDType(s PlanStage, i int) string {
	if i < len(s.WeightDTypes) {
		return s.WeightDTypes[i]
	}
	return ""
}

// convertTo is the dtype the plan converts model's file to before its
// load, "" for none.
func (p Plan) convertTo(model string) string {
	for _, s := range p.Stages {
		if i := slices.Index(s.Models, model); i >= 0 && i < len(s.ConvertTo) {
			return s.ConvertTo[i]
		}
	}
	return ""
}

// room is the most memory any device of the node gives one job: its usable
// memory less its workers' contexts (see Fit).
func (d *Dispatcher) room() (device int, room uint64) {
	workers := map[int]uint64{}
	if d.opts.Pool != nil {
		for _, in := range d.opts.Pool.Infos() {
			workers[in.Device]++
		}
	}
	device = -1
	if d.opts.Devices == nil {
		return device, 0
	}
	for _, dev := range d.opts.Devices.Devices() {
		i := dev.Info().Index
		if led := d.opts.Devices.Ledger(i); led != nil {
			if r := led.Usable() - min(led.Usable(), workers[i]*d.opts.WorkerContextBytes); r > room {
				device, room = i, r
			}
		}
	}
	return device, room
}
