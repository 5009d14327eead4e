package experiment

import "time"

// Summary is one experiment in a list.
type Summary struct {
	ID        string    `json:"id"`
	Type      Type      `json:"type"`
	Kind      string    `json:"kind"`
	State     State     `json:"state"`
	Verdict   string    `json:"verdict,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Baseline  string    `json:"baseline"`
	Candidate string    `json:"candidate"`
	Step      int       `json:"step"`
	Share     int       `json:"share_pct"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Decisions int       `json:"decisions"`
}

// Summarize shortens a record for lists.
func (r Record) Summarize() Summary {
	return Summary{ID: r.ID, Type: r.Spec.Type, Kind: r.Spec.Kind, State: r.State, Verdict: r.Verdict, Reason: r.Reason,
		Baseline: r.Baseline, Candidate: r.Candidate, Step: r.Step, Share: sharePct(r.Spec, r.Step),
		StartedAt: r.StartedAt, EndedAt: r.EndedAt, Decisions: len(r.Decisions)}
}
