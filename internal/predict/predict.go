// Package predict estimates which models the jobs that are not queued yet
// will ask for, from the jobs kiln has seen, so that a prefetch can warm
// them into RAM (and idle VRAM) before anyone waits for them. The queue's
// lookahead (internal/dispatch) only sees jobs already submitted; with a
// short queue it sees nothing, and every model not resident is loaded while
// its job waits.
//
// Three views of the history each give a distribution over models:
//
//   - frequency with recency: a count per model that halves every
//     HalfLife, so that popularity that drifts is followed;
//   - time of day: the same counts kept per hour of the day, halving every
//     DayHalfLife, so that "the SDXL jobs come in the morning" is learned
//     over days;
//   - transitions: how often a job using model X was followed by a job
//     using Y (halving every HalfLife), from the last job seen.
//
// They are mixed with weights learned online: each view's weight is the
// (decayed) mean probability it gave the models that then came, so a view
// that predicts nothing on a workload fades out of the mix.
//
// A Predictor holds no clock and draws no random numbers: time is an
// argument of every call, so that the simulator replays the decisions the
// live node makes on the same sequence (house rule). It is not safe for
// concurrent use; its owner serialises calls.
package predict

import (
	"math"
	"slices"
	"sort"
	"time"
)

// Config tunes a Predictor. Zero fields take the defaults of WithDefaults.
type Config struct {
	// HalfLife is how fast frequency and transition counts fade (default
	// 30 min).
	HalfLife time.Duration
	// DayHalfLife is how fast the time-of-day profile fades (default 3 days).
	DayHalfLife time.Duration
	// Location is the time zone whose hours the time-of-day profile uses
	// (default UTC).
	Location *time.Location
	// MaxModels bounds the models tracked; the least seen are forgotten
	// first (default 4096).
	MaxModels int
	// Views names the views to use, of ViewNames (default: all). Leaving
	// one out measures what it earns.
	Views []string
	// LearnHalfLife is how many observations the learned view weights
	// remember, as a half-life in jobs (default 50).
	LearnHalfLife float64
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.HalfLife <= 0 {
		c.HalfLife = 30 * time.Minute
	}
	if c.DayHalfLife <= 0 {
		c.DayHalfLife = 72 * time.Hour
	}
	if c.Location == nil {
		c.Location = time.UTC
	}
	if c.MaxModels <= 0 {
		c.MaxModels = 4096
	}
	if c.LearnHalfLife <= 0 {
		c.LearnHalfLife = 50
	}
	return c
}

// decayed is a count that halves every half-life: value v as of time at.
type decayed struct {
	v  float64
	at time.Time
}

func (d decayed) value(now time.Time, halfLife time.Duration) float64 {
	dt := now.Sub(d.at)
	if dt <= 0 {
		return d.v
	}
	return d.v * math.Exp2(-float64(dt)/float64(halfLife))
}

func (d *decayed) add(now time.Time, halfLife time.Duration, x float64) {
	d.v = d.value(now, halfLife) + x
	if now.After(d.at) {
		d.at = now
	}
}

// Views of the history, in the order of Predictor.weights.
const (
	viewFrequency = iota
	viewTimeOfDay
	viewTransition
	nViews
)

// ViewNames name the views, index for index with Score.Views.
var ViewNames = [nViews]string{"frequency", "time_of_day", "transition"}

type modelStats struct {
	freq decayed
	hour [24]decayed
	// next counts the models of the jobs that followed a job with this one.
	next map[string]*decayed
}

// Predictor learns from the jobs it is shown (Observe) and ranks the
// models the next ones are likely to need (Ranked).
type Predictor struct {
	cfg    Config
	models map[string]*modelStats
	// hourTotal[h] is the sum over models of their hour-h counts.
	hourTotal [24]decayed
	freqTotal decayed
	// last are the models of the last job observed.
	last []string
	// weights are the learned view weights: the decayed mean probability
	// each view gave what came next; seen is how much evidence they carry.
	weights [nViews]float64
	seen    float64
	jobs    uint64
	// off are the views Config.Views leaves out.
	off [nViews]bool
}

// New returns an empty Predictor.
func New(cfg Config) *Predictor {
	p := &Predictor{cfg: cfg.WithDefaults(), models: map[string]*modelStats{}}
	if len(cfg.Views) > 0 {
		for v, name := range ViewNames {
			p.off[v] = !slices.Contains(cfg.Views, name)
		}
	}
	return p
}

// Jobs is how many jobs were observed.
func (p *Predictor) Jobs() uint64 { return p.jobs }

// Observe records a job that asks for models, submitted at at. Before it
// learns from the job, it scores how well each view predicted it, which
// sets the views' weights.
func (p *Predictor) Observe(at time.Time, models []string) {
	models = dedupe(models)
	if len(models) == 0 {
		return
	}
	if p.jobs > 0 {
		dists, _ := p.views(at)
		keep := math.Exp2(-1 / p.cfg.LearnHalfLife)
		for v := range nViews {
			got := 0.0
			for _, m := range models {
				got += dists[v][m]
			}
			got /= float64(len(models))
			p.weights[v] = p.weights[v]*keep + got*(1-keep)
		}
		p.seen = p.seen*keep + (1 - keep)
	}
	h := at.In(p.cfg.Location).Hour()
	for _, m := range models {
		st := p.stats(m)
		st.freq.add(at, p.cfg.HalfLife, 1)
		st.hour[h].add(at, p.cfg.DayHalfLife, 1)
		p.freqTotal.add(at, p.cfg.HalfLife, 1)
		p.hourTotal[h].add(at, p.cfg.DayHalfLife, 1)
	}
	for _, from := range p.last {
		st := p.models[from]
		if st == nil {
			continue // forgotten meanwhile
		}
		for _, to := range models {
			d := st.next[to]
			if d == nil {
				d = &decayed{}
				st.next[to] = d
			}
			d.add(at, p.cfg.HalfLife, 1/float64(len(models)))
		}
	}
	p.last = models
	p.jobs++
	p.forget(at)
}

func (p *Predictor) stats(m string) *modelStats {
	st := p.models[m]
	if st == nil {
		st = &modelStats{next: map[string]*decayed{}}
		p.models[m] = st
	}
	return st
}

// forget drops the models with the smallest counts past MaxModels, and
// transitions that have faded to nothing, so that memory stays bounded on
// a catalog that keeps growing.
func (p *Predictor) forget(now time.Time) {
	if len(p.models) > p.cfg.MaxModels {
		type mv struct {
			m string
			v float64
		}
		all := make([]mv, 0, len(p.models))
		for m, st := range p.models {
			all = append(all, mv{m, st.freq.value(now, p.cfg.HalfLife)})
		}
		sort.Slice(all, func(i, j int) bool {
			if all[i].v != all[j].v {
				return all[i].v < all[j].v
			}
			return all[i].m < all[j].m
		})
		for _, x := range all[:len(all)-p.cfg.MaxModels] {
			delete(p.models, x.m)
		}
	}
	if p.jobs%256 == 0 {
		for _, st := range p.models {
			for to, d := range st.next {
				if d.value(now, p.cfg.HalfLife) < 1e-3 {
					delete(st.next, to)
				}
			}
		}
	}
}

// views returns each view's distribution over models at now (each sums to
// 1 or is empty), and the evidence behind each: its decayed count of
// observations. Sums run in model order, so that the same history gives
// the same figures to the last bit.
func (p *Predictor) views(now time.Time) (out [nViews]map[string]float64, mass [nViews]float64) {
	for v := range out {
		out[v] = map[string]float64{}
	}
	if tot := p.freqTotal.value(now, p.cfg.HalfLife); tot > 0 {
		mass[viewFrequency] = tot
		for m, st := range p.models {
			if x := st.freq.value(now, p.cfg.HalfLife) / tot; x > 0 {
				out[viewFrequency][m] = x
			}
		}
	}
	h := now.In(p.cfg.Location).Hour()
	if tot := p.hourTotal[h].value(now, p.cfg.DayHalfLife); tot > 0 {
		mass[viewTimeOfDay] = tot
		for m, st := range p.models {
			if x := st.hour[h].value(now, p.cfg.DayHalfLife) / tot; x > 0 {
				out[viewTimeOfDay][m] = x
			}
		}
	}
	var from int
	for _, l := range p.last {
		st := p.models[l]
		if st == nil {
			continue
		}
		tos := make([]string, 0, len(st.next))
		for to := range st.next {
			tos = append(tos, to)
		}
		sort.Strings(tos)
		tot := 0.0
		for _, to := range tos {
			tot += st.next[to].value(now, p.cfg.HalfLife)
		}
		if tot <= 0 {
			continue
		}
		from++
		mass[viewTransition] += tot
		for _, to := range tos {
			out[viewTransition][to] += st.next[to].value(now, p.cfg.HalfLife) / tot
		}
	}
	if from > 1 {
		for m := range out[viewTransition] {
			out[viewTransition][m] /= float64(from)
		}
		mass[viewTransition] /= float64(from)
	}
	return out, mass
}

// Score is a model's estimated chance of being asked for by the next job.
type Score struct {
	Model string
	// P mixes the views by their learned weights.
	P float64
	// Views are each view's probability, index for index with ViewNames.
	Views [nViews]float64
}

// Weights returns the learned view weights, normalised to sum to 1
// (equal weights before any evidence).
func (p *Predictor) Weights() [nViews]float64 {
	var w [nViews]float64
	sum := 0.0
	for v := range nViews {
		// A floor keeps a view that has predicted nothing yet in play, so
		// that it can earn weight once the workload turns its way.
		w[v] = p.weights[v] + 0.02*p.seen + 1e-9
		sum += w[v]
	}
	if p.seen == 0 {
		for v := range w {
			w[v] = 1.0 / nViews
		}
		return w
	}
	for v := range w {
		w[v] /= sum
	}
	return w
}

// Ranked returns every model with a chance above zero, most likely first
// (ties by name, so that the order is reproducible).
func (p *Predictor) Ranked(now time.Time) []Score {
	dists, mass := p.views(now)
	w := p.Weights()
	// A view speaks with the confidence of its evidence: one whose counts
	// have faded (the last jobs were hours ago) or that has nothing to say
	// (no transitions from the last job, no jobs ever seen at this hour)
	// gives its weight to the others.
	sum := 0.0
	for v := range nViews {
		w[v] *= mass[v] / (mass[v] + 1)
		if p.off[v] {
			w[v] = 0
		}
		sum += w[v]
	}
	if sum == 0 {
		return nil
	}
	byModel := map[string]*Score{}
	for v := range nViews {
		if len(dists[v]) == 0 || w[v] == 0 {
			continue
		}
		for m, x := range dists[v] {
			s := byModel[m]
			if s == nil {
				s = &Score{Model: m}
				byModel[m] = s
			}
			s.Views[v] = x
			s.P += w[v] / sum * x
		}
	}
	out := make([]Score, 0, len(byModel))
	for _, s := range byModel {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].P != out[j].P {
			return out[i].P > out[j].P
		}
		return out[i].Model < out[j].Model
	})
	return out
}

func dedupe(models []string) []string {
	out := make([]string, 0, len(models))
	for _, m := range models {
		if m == "" {
			continue
		}
		dup := false
		for _, o := range out {
			if o == m {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, m)
		}
	}
	return out
}

// Count is model's decayed count of jobs at now: the frequency view's
// evidence before normalising, 0 for a model never seen or forgotten.
func (p *Predictor) Count(now time.Time, model string) float64 {
	st := p.models[model]
	if st == nil {
		return 0
	}
	return st.freq.value(now, p.cfg.HalfLife)
}
