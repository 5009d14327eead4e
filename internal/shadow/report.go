package shadow

import (
	"sort"
	"time"
)

// Report is the shadow's state, the body of GET /v1/experiments/shadow.
type Report struct {
	// Accesses are the job starts replayed; Dropped the ones the feed lost;
	// Unknown the models (or devices) the shadow could not place.
	Accesses uint64    `json:"accesses"`
	Dropped  uint64    `json:"dropped"`
	Unknown  uint64    `json:"unknown"`
	Since    time.Time `json:"since"`
	LastAt   time.Time `json:"last_access,omitzero"`
	// OverheadPerAccessUS is the mean replay time of one access over all
	// candidates, in microseconds of the shadow's own goroutine.
	OverheadPerAccessUS float64 `json:"overhead_per_access_us"`
	// Candidates are sorted by VRAM hit ratio, best first; the live
	// policy's row is marked live.
	Candidates []CandidateReport `json:"candidates"`
}

// CandidateReport is one candidate's figures. HitRatio, Hits and Misses are
// the VRAM tier's (summed over devices): an access that finds its model
// on its GPU. BytesLoaded, LoadTimeS and Evictions are summed over tiers.
type CandidateReport struct {
	Policy      string       `json:"policy"`
	Live        bool         `json:"live,omitempty"`
	Faulted     bool         `json:"faulted,omitempty"`
	Fault       string       `json:"fault,omitempty"`
	HitRatio    float64      `json:"hit_ratio"`
	Hits        uint64       `json:"hits"`
	Misses      uint64       `json:"misses"`
	BytesLoaded uint64       `json:"bytes_loaded"`
	LoadTimeS   float64      `json:"load_time_s"`
	Evictions   uint64       `json:"evictions"`
	Tiers       []TierReport `json:"tiers"`
}

// TierReport is one ghost tier of one candidate.
type TierReport struct {
	Tier          string  `json:"tier"`
	CapacityBytes uint64  `json:"capacity_bytes"`
	UsedBytes     uint64  `json:"used_bytes"`
	Entries       int     `json:"entries"`
	HitRatio      float64 `json:"hit_ratio"`
	Hits          uint64  `json:"hits"`
	Misses        uint64  `json:"misses"`
	BytesLoaded   uint64  `json:"bytes_loaded"`
	LoadTimeS     float64 `json:"load_time_s"`
	Evictions     uint64  `json:"evictions"`
	// Bypassed counts loads that could not be cached in this tier.
	Bypassed uint64 `json:"bypassed"`
}

func ratio(h, m uint64) float64 {
	if h+m == 0 {
		return 0
	}
	return float64(h) / float64(h+m)
}

func (g *ghost) report() TierReport {
	return TierReport{Tier: g.tier, CapacityBytes: g.capacity, UsedBytes: g.used, Entries: len(g.entries),
		HitRatio: ratio(g.hits, g.misses), Hits: g.hits, Misses: g.misses, BytesLoaded: g.bytesLoaded,
		LoadTimeS: g.loadTime.Seconds(), Evictions: g.evictions, Bypassed: g.bypassed}
}

// Report returns a snapshot of every candidate's figures.
func (s *Shadow) Report() Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := Report{Accesses: s.accesses, Dropped: s.dropped, Unknown: s.unknown, Since: s.since, LastAt: s.lastAt,
		Candidates: make([]CandidateReport, 0, len(s.cands))}
	if s.accesses > 0 {
		r.OverheadPerAccessUS = float64(s.busy.Microseconds()) / float64(s.accesses)
	}
	for _, h := range s.cands {
		c := CandidateReport{Policy: h.name, Live: h.live, Faulted: h.faulted, Fault: h.fault}
		tiers := append([]*ghost(nil), h.vram...)
		for _, g := range []*ghost{h.ram, h.disk} {
			if g != nil {
				tiers = append(tiers, g)
			}
		}
		for i, g := range tiers {
			tr := g.report()
			if i < len(h.vram) {
				c.Hits += tr.Hits
				c.Misses += tr.Misses
			}
			c.BytesLoaded += tr.BytesLoaded
			c.LoadTimeS += tr.LoadTimeS
			c.Evictions += tr.Evictions
			c.Tiers = append(c.Tiers, tr)
		}
		c.HitRatio = ratio(c.Hits, c.Misses)
		r.Candidates = append(r.Candidates, c)
	}
	sort.SliceStable(r.Candidates, func(i, j int) bool {
		a, b := r.Candidates[i], r.Candidates[j]
		if a.Faulted != b.Faulted {
			return !a.Faulted
		}
		if a.HitRatio != b.HitRatio {
			return a.HitRatio > b.HitRatio
		}
		return a.LoadTimeS < b.LoadTimeS
	})
	return r
}
