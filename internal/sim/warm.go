package sim

import (
	"github.com/kiln-gpu/kiln/internal/predict"
)

// PredictReport is what the predictor's warming did (Config.Predict): models
// it brought into the RAM tier before any job asked for them (Warmed), those
// a job then loaded from there or from the transfer in flight (Used), and
// those dropped, or left at the end, unused (Wasted); Displaced are the
// entries its plans dropped to make room (never a queued job's model).
// HitRatio is Used / (Used + Wasted).
type PredictReport struct {
	Warmed         int64   `json:"warmed"`
	WarmedBytes    int64   `json:"warmed_bytes"`
	Used           int64   `json:"used"`
	UsedBytes      int64   `json:"used_bytes"`
	Wasted         int64   `json:"wasted"`
	WastedBytes    int64   `json:"wasted_bytes"`
	Displaced      int64   `json:"displaced"`
	DisplacedBytes int64   `json:"displaced_bytes"`
	HitRatio       float64 `json:"hit_ratio"`
}

// PredictConfig turns on the predictor (internal/predict) in the simulator:
// every arrival is shown to it, and whenever no transfer is in flight it
// plans what to warm into the RAM tier, as the live dispatcher does.
type PredictConfig struct {
	Enabled bool
	Model   predict.Config
	Warm    predict.WarmOptions
	// MaxQueued: the predictor warms only while fewer jobs than this are
	// queued (0: always). With a queue as long as the lookahead's window,
	// the lookahead knows what comes next; a guess can only displace it.
	MaxQueued int
	// noWarm is an experiment the predictor bench (predict_eval_test.go)
	// measures, unexported because live kiln has no such setting: the
	// predictor observing without warming. (The RAM tier evicting by the
	// predictor's counts, the experiment that stood beside it, is now the
	// eviction policy "demand", over ABI 1.3's recent demand.)
	noWarm bool
}

// predictState is the simulator's predictor and its books.
type predictState struct {
	p         *predict.Predictor
	opts      predict.WarmOptions
	maxQueued int
	// pending are warmed models no job has used yet, and whether their
	// transfer is still in flight.
	pending map[string]bool
	report  PredictReport
	// onPlan, when set (by tests), sees every plan with the room and the
	// queued jobs' models it was made for.
	onPlan func(plan predict.Plan, room predict.Room, needed map[string]bool)
}

func newPredictState(c PredictConfig) *predictState {
	if !c.Enabled {
		return nil
	}
	return &predictState{p: predict.New(c.Model), opts: c.Warm, maxQueued: c.MaxQueued, pending: map[string]bool{}}
}

// observeArrival shows the predictor a job as it is submitted, at its
// virtual time.
func (s *simulator) observeArrival(j *simJob) {
	if s.pred == nil {
		return
	}
	s.pred.p.Observe(epoch.Add(s.now), j.models)
}

// warmPredicted plans with predict.PlanWarm and starts the plan's
// transfers into the RAM tier: the predictor's chances for what comes
// next, the tier's entries with every model of a queued job protected,
// and the lookahead's transfers in flight counted as used. It runs only
// while no transfer is in flight, as the live lookahead runs one at a time.
func (s *simulator) warmPredicted() {
	if s.pred == nil || s.cfg.Predict.noWarm || s.cfg.NoRAMTier || s.prefetching > 0 || (s.pred.maxQueued > 0 && s.queued() >= s.pred.maxQueued) {
		return
	}
	now := epoch.Add(s.now)
	ranked := s.pred.p.Ranked(now)
	if len(ranked) == 0 {
		return
	}
	needed := map[string]bool{}
	for _, j := range s.head(0) {
		for _, m := range j.models {
			needed[m] = true
		}
	}
	// The room is the tier's target fill, not its capacity: the slack
	// above the target is where the tier's own eviction lands the next
	// load, so a warm into it would displace an entry anyway, chosen by
	// the tier and not weighed by the gate (PlanWarm).
	room := predict.Room{Capacity: int64(float64(s.ram.capacity) * s.ram.target)}
	for m := range s.inflight {
		room.Reserved += s.models[m].Bytes
		needed[m] = true
	}
	// A model in some worker's VRAM is served from there (placement
	// prefers the worker that holds it): warming it into RAM is waste.
	room.Above = map[string]bool{}
	for _, w := range s.workers {
		for m := range w.resident {
			room.Above[m] = true
		}
	}
	room.ReloadCost = func(m string) float64 {
		mod := s.models[m]
		took := s.cfg.Cost.DiskReadTime(mod.Bytes)
		if !s.disk.has(m) {
			took += s.remoteTime(mod.Bytes)
		}
		return took.Seconds()
	}
	for _, m := range sortedKeys(s.ram.entries) {
		room.Entries = append(room.Entries, predict.Entry{Model: m, Bytes: s.ram.entries[m].bytes, Protected: needed[m]})
	}
	plan := predict.PlanWarm(ranked, func(m string) (int64, bool) {
		mod, ok := s.models[m]
		return mod.Bytes, ok
	}, room, s.pred.opts)
	if s.pred.onPlan != nil {
		s.pred.onPlan(plan, room, needed)
	}
	for _, m := range plan.Evict {
		e := s.ram.entries[m]
		delete(s.ram.entries, m)
		s.ram.used -= e.bytes
		s.ram.stats.Evictions++
		s.ram.stats.EvictedBytes += e.bytes
		s.pred.report.Displaced++
		s.pred.report.DisplacedBytes += e.bytes
		if s.ram.onEvict != nil {
			s.ram.onEvict(s.ram.name, m)
		}
		s.evicted([]string{m})
	}
	for _, m := range plan.Warm {
		if _, busy := s.inflight[m]; busy {
			continue
		}
		mod := s.models[m]
		took := s.cfg.Cost.DiskReadTime(mod.Bytes)
		if !s.disk.has(m) {
			took += s.remoteTime(mod.Bytes)
		}
		s.inflight[m] = s.now + took
		s.unused[m] = took
		s.prefetching++
		s.pred.pending[m] = true
		s.prefetch.Issued++
		s.prefetch.IssuedBytes += mod.Bytes
		s.pred.report.Warmed++
		s.pred.report.WarmedBytes += mod.Bytes
		s.push(event{at: s.now + took, kind: evPrefetched, model: m})
	}
}

// warmLanding is called as a prefetch transfer lands: a warmed model is put
// into the RAM tier only if it fits without evicting (its plan made room
// when it started; a job's load may have taken that room since, and the
// tier's own eviction could then drop a queued job's model). It reports
// whether it handled m.
func (s *simulator) warmLanding(m string) bool {
	if s.pred == nil || !s.pred.pending[m] {
		return false
	}
	mod := s.models[m]
	if s.ram.used+mod.Bytes > s.ram.capacity {
		s.pred.wasted(m, mod.Bytes)
		delete(s.unused, m)
		s.prefetch.Wasted++
		s.prefetch.WastedBytes += mod.Bytes
		if !s.disk.has(m) {
			s.evicted(s.disk.insert(m, mod.Bytes, s.now, s.remoteTime(mod.Bytes)))
		}
		return true
	}
	s.landPrefetch(m, mod)
	return true
}

// warmUsed books a job's load of model m that a warm brought up.
func (s *simulator) warmUsed(m string) {
	if s.pred == nil || !s.pred.pending[m] {
		return
	}
	delete(s.pred.pending, m)
	s.pred.report.Used++
	s.pred.report.UsedBytes += s.models[m].Bytes
}

func (p *predictState) wasted(m string, bytes int64) {
	if !p.pending[m] {
		return
	}
	delete(p.pending, m)
	p.report.Wasted++
	p.report.WastedBytes += bytes
}

// warmEvicted books warmed models evicted before any job used them.
func (s *simulator) warmEvicted(m string) {
	if s.pred != nil && !s.ram.has(m) {
		if _, flying := s.inflight[m]; !flying {
			s.pred.wasted(m, s.models[m].Bytes)
		}
	}
}

// predictReport closes the books at the end of a run: warmed models no job
// used are wasted.
func (s *simulator) predictReport() *PredictReport {
	if s.pred == nil {
		return nil
	}
	for _, m := range sortedKeys(s.pred.pending) {
		s.pred.wasted(m, s.models[m].Bytes)
	}
	r := s.pred.report
	if r.Used+r.Wasted > 0 {
		r.HitRatio = float64(r.Used) / float64(r.Used+r.Wasted)
	}
	return &r
}
