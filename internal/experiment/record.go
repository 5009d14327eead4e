package experiment

import (
	"time"

	"github.com/kiln-gpu/kiln/internal/stats"
)

// State is where an experiment is.
type State string

// The states. Only Running is not final.
const (
	Running State = "running"
	// Promoted: a canary passed every step; the candidate is active.
	Promoted State = "promoted"
	// RolledBack: a canary failed (or an A/B test's candidate faulted);
	// the baseline serves every decision again.
	RolledBack State = "rolled_back"
	// Completed: an A/B test or switchback ended with its verdict.
	Completed State = "completed"
	// Inconclusive: a canary reached its deadline without a decision:
	// nothing showed it worse, but it could not rule out max_regression
	// either. Nothing is promoted; the baseline keeps serving, and the
	// record's Power says what the canary could have seen.
	Inconclusive State = "inconclusive"
	// Aborted: an operator stopped it; the baseline serves again.
	Aborted State = "aborted"
)

// Record is an experiment's durable record: what was asked, how the node
// was split, every decision with its evidence, and the latest report.
type Record struct {
	ID    string `json:"id"`
	Spec  Spec   `json:"spec"`
	State State  `json:"state"`
	// Verdict is the outcome: promoted, rolled_back, inconclusive (a
	// canary), better, worse, no_difference or inconclusive (an A/B test
	// or switchback); empty while running.
	Verdict   string    `json:"verdict,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Baseline  string    `json:"baseline"`
	Candidate string    `json:"candidate"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// Step is the index of the canary step in Spec.Steps.
	Step          int        `json:"step"`
	StepStartedAt time.Time  `json:"step_started_at"`
	Assignment    Assignment `json:"assignment"`
	Decisions     []Decision `json:"decisions"`
	Report        *Report    `json:"report,omitempty"`
	// Power is what the verdict can and cannot say, per gating metric:
	// the smallest effect the experiment could have detected and the
	// largest regression it rules out. Set when the experiment ends.
	Power []Power `json:"power,omitempty"`
}

// Power is one gating metric's resolution at an experiment's end.
type Power struct {
	Metric string `json:"metric"`
	// Detectable and NoWorseThan are Comparison's, in the metric's units;
	// the Rel fields divide them by the baseline's mean (latency only).
	Detectable     float64 `json:"detectable"`
	NoWorseThan    float64 `json:"no_worse_than"`
	DetectableRel  float64 `json:"detectable_rel,omitempty"`
	NoWorseThanRel float64 `json:"no_worse_than_rel,omitempty"`
	// Bounded is false when the experiment ended before the test had
	// enough windows to bound anything: it then detected nothing.
	Bounded bool `json:"bounded"`
}

// Assignment is how the node is split between the arms, recorded so that
// a split can be checked and replayed.
type Assignment struct {
	Unit Unit   `json:"unit"`
	Seed uint64 `json:"seed"`
	// JobShare is the candidate's share of jobs (by the seeded hash of job
	// IDs), 0..1.
	JobShare float64 `json:"job_share"`
	// BaselineShare is the baseline arm's share; the rest of the node
	// (production) runs the active policies and is not counted.
	BaselineShare    float64  `json:"baseline_share"`
	CandidateWorkers []string `json:"candidate_workers,omitempty"`
	BaselineWorkers  []string `json:"baseline_workers,omitempty"`
	// Windows is a switchback's arm sequence (0 baseline, 1 candidate),
	// repeating, from StartedAt in steps of Spec.Window.
	Windows []int `json:"windows,omitempty"`
}

// Decision is one thing the controller decided, with its evidence.
type Decision struct {
	Time time.Time `json:"time"`
	// AtS is seconds since the experiment started.
	AtS    float64 `json:"at_s"`
	Step   int     `json:"step"`
	Share  int     `json:"share_pct"`
	Action string  `json:"action"` // start | hold | advance | promote | rollback | conclude | abort | resume
	Reason string  `json:"reason"`
	// Looks counts the evaluations a hold stands for: consecutive holds
	// for the same reason are one decision, so that the record stays
	// readable over a long step.
	Looks    int       `json:"looks,omitempty"`
	Evidence *Evidence `json:"evidence,omitempty"`
}

// Evidence is what a decision was taken on.
type Evidence struct {
	Arms        []ArmSummary   `json:"arms"`
	Comparisons []Comparison   `json:"comparisons,omitempty"`
	Guards      []GuardResult  `json:"guards,omitempty"`
	SRM         *SRMResult     `json:"srm,omitempty"`
	Verdict     stats.Verdict  `json:"verdict"`
	Extra       map[string]any `json:"extra,omitempty"`
}

// ArmSummary is an arm in a decision's evidence.
type ArmSummary struct {
	Arm    string  `json:"arm"`
	Policy string  `json:"policy"`
	N      int     `json:"n"`
	Failed int     `json:"failed"`
	P95S   float64 `json:"p95_s"`
}

// Comparison is one statistical test of candidate against baseline. Effect,
// Low and High are candidate − baseline, in the metric's units (seconds or
// a rate).
type Comparison struct {
	Metric string  `json:"metric"`
	Test   string  `json:"test"`
	NA     int     `json:"n_baseline"`
	NB     int     `json:"n_candidate"`
	Effect float64 `json:"effect"`
	Low    float64 `json:"low"`
	High   float64 `json:"high"`
	P      float64 `json:"p"`
	Alpha  float64 `json:"alpha"`
	// MinEffect is the practical threshold a gating effect must pass.
	MinEffect float64 `json:"min_effect,omitempty"`
	// Windows counts the paired windows (a switchback's window pairs) the
	// test has seen; they, not the jobs, are its observations.
	Windows int `json:"windows,omitempty"`
	// BaselineMean is the baseline's mean over the paired windows, the
	// scale of the relative figures.
	BaselineMean float64 `json:"baseline_mean,omitempty"`
	// Detectable is the smallest effect this comparison could have acted
	// on at this look: the half-width of its confidence set, or MinEffect
	// when that is larger. An effect of this size would have been judged
	// worse about half of the time; much larger ones almost always.
	Detectable float64 `json:"detectable,omitempty"`
	// NoWorseThan is the upper end of the confidence set (0 when it lies
	// below zero): with confidence 1 − Alpha the candidate is not worse
	// than the baseline by more than this. A promotion says it.
	NoWorseThan float64       `json:"no_worse_than,omitempty"`
	Verdict     stats.Verdict `json:"verdict"`
	// Gating is false for comparisons reported for information only.
	Gating bool `json:"gating"`
}

// GuardResult is one guard at one look.
type GuardResult struct {
	Guard string  `json:"guard"`
	Value float64 `json:"value"`
	N     int     `json:"n"`
	// Judged is false until the arm has enough samples for the metric.
	Judged bool `json:"judged"`
	OK     bool `json:"ok"`
}

// SRMResult is the sample-ratio-mismatch check of the counted jobs
// against the split's intended share.
type SRMResult struct {
	Expected  float64 `json:"expected_candidate_share"`
	Baseline  int     `json:"baseline"`
	Candidate int     `json:"candidate"`
	P         float64 `json:"p"`
	Mismatch  bool    `json:"mismatch"`
}

// Report is an experiment's latest look: both arms and their comparisons.
type Report struct {
	Time        time.Time     `json:"time"`
	Step        int           `json:"step"`
	Share       int           `json:"share_pct"`
	Arms        [2]ArmReport  `json:"arms"`
	Comparisons []Comparison  `json:"comparisons,omitempty"`
	Guards      []GuardResult `json:"guards,omitempty"`
	SRM         *SRMResult    `json:"srm,omitempty"`
	Verdict     stats.Verdict `json:"verdict"`
}

func (r *Record) clone() Record {
	c := *r
	c.Decisions = append([]Decision(nil), r.Decisions...)
	c.Power = append([]Power(nil), r.Power...)
	return c
}
