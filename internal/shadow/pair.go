package shadow

import (
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/policy"
)

// Pair is a shadow of two candidates, an eviction experiment's baseline
// and candidate arms, whose total load times the experiment compares
// window by window (experiment.Replay): both replay the same accesses, so
// their difference is the two policies' alone.
type Pair struct {
	*Shadow
}

// Names of the pair's two hierarchies: the arms may run the same version
// (an A/A test), and a shadow keeps one hierarchy per name.
const (
	pairBaseline  = "baseline"
	pairCandidate = "candidate"
)

// NewPair builds the pair over the experiment's arms at topo's capacities.
func NewPair(baseline, candidate *policy.Arm, topo Topology, src Sources, clk clock.Clock) (*Pair, error) {
	s, err := New([]Candidate{FromArm(pairBaseline, baseline), FromArm(pairCandidate, candidate)}, topo, src, clk)
	if err != nil {
		return nil, err
	}
	return &Pair{s}, nil
}

// LoadTimes are the load times each hierarchy has charged so far, over
// every tier. A faulted hierarchy stops being fed, so its total stops.
func (p *Pair) LoadTimes() (baseline, candidate time.Duration) {
	baseline, _ = p.LoadTimeOf(pairBaseline)
	candidate, _ = p.LoadTimeOf(pairCandidate)
	return baseline, candidate
}

// LoadTimeOf is the load time the hierarchy of candidate name has charged
// so far over every tier; ok is false without such a candidate, or once it
// faulted (its figures stopped).
func (s *Shadow) LoadTimeOf(name string) (t time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.cands {
		if h.name != name {
			continue
		}
		for _, g := range h.vram {
			t += g.loadTime
		}
		for _, g := range []*ghost{h.ram, h.disk} {
			if g != nil {
				t += g.loadTime
			}
		}
		return t, !h.faulted
	}
	return 0, false
}

// Names are the candidates' names, in the order they were given.
func (s *Shadow) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.cands))
	for _, h := range s.cands {
		out = append(out, h.name)
	}
	return out
}

// Between is a replay of two of a shadow's candidates, the policies a
// change by hand moved from and to (experiment.WatchOptions.Replay): the
// shadow's ghosts have run since the node started, so both are warm.
type Between struct {
	s        *Shadow
	from, to string
}

// Between returns the replay of the candidates that stand for the policy
// refs from and to ("gdsf@1" is candidate "gdsf" or "gdsf@1"); ok is
// false when the shadow has no candidate for either.
func (s *Shadow) Between(from, to string) (*Between, bool) {
	f, okf := s.candidateFor(from)
	t, okt := s.candidateFor(to)
	if !okf || !okt || f == t {
		return nil, false
	}
	return &Between{s: s, from: f, to: t}, true
}

// candidateFor names the candidate of policy ref: its exact name, else a
// candidate named by the ref's policy name alone (a built-in).
func (s *Shadow) candidateFor(ref string) (string, bool) {
	name, _, _ := strings.Cut(ref, "@")
	found := ""
	for _, n := range s.Names() {
		switch n {
		case ref:
			return n, true
		case name:
			found = n
		}
	}
	return found, found != ""
}

// LoadTimes implements experiment.Replay: the old policy's ghosts, then
// the new one's.
func (b *Between) LoadTimes() (from, to time.Duration) {
	from, _ = b.s.LoadTimeOf(b.from)
	to, _ = b.s.LoadTimeOf(b.to)
	return from, to
}

// Close implements experiment.Replay; the shadow goes on.
func (b *Between) Close() error { return nil }
