package experiment

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/stats"
)

// look builds the report of the running step: both arms, the comparisons
// (gating ones by always-valid sequential tests, so that looking every
// interval keeps the error rate), the guards and the SRM check.
func (c *Controller) look(a *active, now time.Time) *Report {
	rec, spec := a.rec, a.rec.Spec
	pct := sharePct(spec, rec.Step)
	rep := &Report{Time: now, Step: rec.Step, Share: pct}
	tier := a.tierNow()
	for arm := range 2 {
		acc := a.step[arm]
		acc.hits, acc.misses, acc.bytes = tier[arm].hits, tier[arm].misses, tier[arm].bytes
		acc.faults = a.arms[arm].Faults() - a.faults0[arm]
		a.total[arm].faults = acc.faults
		rep.Arms[arm] = acc.report(arm, a.arms[arm].Ref())
	}
	if spec.Unit == Workers {
		rep.Arms[Baseline].Workers = rec.Assignment.BaselineWorkers
		rep.Arms[Candidate].Workers = rec.Assignment.CandidateWorkers
	}
	rule := stats.Rule{MinN: spec.MinSamples, Alpha: a.alpha, LowerIsBetter: true}
	hasBaseline := pct < 100
	// The gating tests run over the whole experiment: a canary's 100%
	// step still reports what its earlier steps established.
	rep.Comparisons = append(rep.Comparisons, c.windowed(a, now, mLatency, "latency_s", spec.MinSamples))
	rep.Comparisons = append(rep.Comparisons, c.windowed(a, now, mError, "error_rate", spec.MinSamples))
	if s := a.series[mMiss]; s.n[Baseline]+s.n[Candidate] > 0 {
		// Jobs with a deadline are a fraction of the traffic: the
		// paired windows' minimum is this test's floor, not min_samples.
		rep.Comparisons = append(rep.Comparisons, c.windowed(a, now, mMiss, "deadline_miss_rate", 0))
	}
	if s := a.series[mInteractive]; s.n[Baseline]+s.n[Candidate] > 0 {
		// Likewise a fraction of the traffic.
		rep.Comparisons = append(rep.Comparisons, c.windowed(a, now, mInteractive, "interactive_latency_s", 0))
	}
	if a.replay != nil {
		// The ghosts of both policies see every access at every step, the
		// 100% step included: this comparison needs no baseline arm.
		rep.Comparisons = append(rep.Comparisons, c.replayComparison(a, now))
	}
	if hasBaseline && spec.Type != Switchback {
		// The rank test and its shift estimate describe the effect for
		// the reader; they are fixed-horizon and assume independent jobs,
		// which bursty traffic's are not, so they neither gate nor hold.
		// Until both arms have min_samples the step holds anyway; the test
		// is computed only then, and again only when the counts changed.
		if la, lb := a.step[Baseline].latency, a.step[Candidate].latency; len(la) >= spec.MinSamples && len(lb) >= spec.MinSamples {
			if a.rank == nil || a.rank.NA != len(la) || a.rank.NB != len(lb) {
				cmp := stats.MannWhitneyCI(la, lb, spec.Confidence).Comparison()
				a.rank = &Comparison{Metric: "latency_s", Test: "mann-whitney (hodges-lehmann shift)",
					NA: cmp.NA, NB: cmp.NB, Effect: cmp.Effect, Low: cmp.Low, High: cmp.High, P: cmp.P, Alpha: 1 - spec.Confidence,
					Verdict: stats.Decide(cmp, stats.Rule{MinN: spec.MinSamples, Alpha: 1 - spec.Confidence, LowerIsBetter: true})}
			}
			rep.Comparisons = append(rep.Comparisons, *a.rank)
		}
		srmP := 1.0
		nb, nc := a.step[Baseline].n, a.step[Candidate].n
		sb, sc := a.r.shares[Baseline], a.r.shares[Candidate]
		if sb > 0 && sc > 0 {
			_, srmP = stats.SRM([]int{nb, nc}, []float64{sb, sc})
		}
		exp := 0.0
		if sb+sc > 0 {
			exp = sc / (sb + sc)
		}
		rep.SRM = &SRMResult{Expected: exp, Baseline: nb, Candidate: nc, P: srmP, Mismatch: srmP < stats.SRMAlpha}
	}
	if spec.Type == Switchback {
		info := c.windowComparison(a, rule)
		info.Gating = false // fixed-horizon: for the reader only
		rep.Comparisons = append(rep.Comparisons, info)
	}
	for _, gs := range spec.Guards {
		g, err := ParseGuard(gs)
		if err != nil {
			continue
		}
		rep.Guards = append(rep.Guards, judgeGuard(g, rep.Arms, hasBaseline, spec.MinSamples))
	}
	for i := range rep.Comparisons {
		rep.Comparisons[i].clean()
	}
	rep.Verdict = overall(rep.Comparisons)
	if !hasBaseline && spec.Type == Canary {
		// Nothing left to compare with: the guards and the candidate's
		// sample gate this step (holdReason), not a comparison.
		rep.Verdict = stats.NoDifference
	}
	rec.Report = rep
	return rep
}

// windowed judges gating metric m on its paired windows: worse when the
// group-sequential test's last look rejects with its interval above zero
// and an effect beyond the practical threshold; better the other way
// round (lower is better for every gating metric). Fewer than minJobs
// jobs in either arm, or no bounded look yet, is insufficient data.
func (c *Controller) windowed(a *active, now time.Time, m int, metric string, minJobs int) Comparison {
	s := a.series[m]
	s.close(now)
	base := s.baseMean()
	latency := m == mLatency || m == mInteractive
	floor := 0.0
	if !latency {
		floor = s.rateFloor()
	}
	r := a.tests[m].look(s.diffs, floor)
	// Rates are tested in points; latencies as log ratios (newTests),
	// reported in seconds at the baseline's mean: x ↦ base·(eˣ − 1).
	minEffect, testMin := c.cfg.MinRateEffect, c.cfg.MinRateEffect
	seconds := func(x float64) float64 { return x }
	if latency {
		minEffect, testMin = c.cfg.MinEffect*base, math.Log1p(c.cfg.MinEffect)
		seconds = func(x float64) float64 { return base * math.Expm1(x) }
	}
	p := r.P
	if a.rec.Spec.Type == Canary {
		// One-sided in the direction of the estimate (newTests).
		p /= 2
	}
	cmp := Comparison{Metric: metric, NA: s.n[Baseline], NB: s.n[Candidate], Windows: r.N, BaselineMean: base,
		Effect: seconds(r.Mean), Low: seconds(r.Low), High: seconds(r.High), P: p, Alpha: a.alpha, MinEffect: minEffect, Gating: true,
		Test: fmt.Sprintf("group-sequential batch-means t on paired %s windows", s.width)}
	if latency {
		cmp.Test = fmt.Sprintf("group-sequential batch-means t on log ratios of paired %s windows", s.width)
	}
	if a.rec.Spec.Type == Switchback {
		cmp.Test = "group-sequential batch-means t on switchback window pairs"
		if latency {
			cmp.Test = "group-sequential batch-means t on log ratios of switchback window pairs"
		}
	}
	if !r.Bounded || cmp.NA < minJobs || cmp.NB < minJobs {
		cmp.Verdict = stats.InsufficientData
		if !r.Bounded {
			cmp.Low, cmp.High = 0, 0
		}
		return cmp
	}
	settle(&cmp, r, testMin, max(seconds(r.Half), minEffect))
	if !latency {
		// A rate differs by at most 1.
		cmp.Detectable, cmp.NoWorseThan = min(cmp.Detectable, 1), min(cmp.NoWorseThan, 1)
	}
	return cmp
}

// settle gives a bounded look's verdict, lower being better for every
// gating metric: worse when the interval lies above zero and the effect
// beyond testMin (both in the test's scale), better the other way round,
// else no difference; and what it could have seen (detectable, in the
// reported scale) and rules out (the interval's upper end, cmp.High).
func settle(cmp *Comparison, r seqLook, testMin, detectable float64) {
	switch {
	case r.Low > 0 && r.Mean > testMin:
		cmp.Verdict = stats.Worse
	case r.High < 0 && r.Mean < -testMin:
		cmp.Verdict = stats.Better
	default:
		cmp.Verdict = stats.NoDifference
	}
	cmp.Detectable = detectable
	cmp.NoWorseThan = max(cmp.High, 0)
}

// power is what the last look's gating comparisons can say.
func power(rep *Report) []Power {
	if rep == nil {
		return nil
	}
	var out []Power
	for _, c := range rep.Comparisons {
		if !c.Gating {
			continue
		}
		p := Power{Metric: c.Metric, Detectable: c.Detectable, NoWorseThan: c.NoWorseThan, Bounded: c.Detectable > 0}
		if latencyMetric(c.Metric) && c.BaselineMean > 0 {
			p.DetectableRel, p.NoWorseThanRel = c.Detectable/c.BaselineMean, c.NoWorseThan/c.BaselineMean
		}
		out = append(out, p)
	}
	return out
}

// powerText says what a verdict rules out, e.g. "no regression larger
// than latency +3.1 s (+8.0%), error rate +0.004, deadline-miss rate
// +0.031 (98% confidence); smallest detectable: …".
func powerText(ps []Power, conf float64) string {
	var bound, det []string
	for _, p := range ps {
		if !p.Bounded {
			bound = append(bound, p.Metric+" unbounded (too few windows)")
			continue
		}
		if latencyMetric(p.Metric) {
			name := strings.TrimSuffix(p.Metric, "_s")
			bound = append(bound, fmt.Sprintf("%s +%.3g s (+%.1f%%)", name, p.NoWorseThan, 100*p.NoWorseThanRel))
			det = append(det, fmt.Sprintf("%s +%.3g s (+%.1f%%)", name, p.Detectable, 100*p.DetectableRel))
			continue
		}
		bound = append(bound, fmt.Sprintf("%s +%.3g", p.Metric, p.NoWorseThan))
		det = append(det, fmt.Sprintf("%s +%.3g", p.Metric, p.Detectable))
	}
	if len(bound) == 0 {
		return ""
	}
	s := fmt.Sprintf("no regression larger than %s (%.0f%% confidence)", strings.Join(bound, ", "), 100*conf)
	if len(det) > 0 {
		s += "; smallest detectable effect " + strings.Join(det, ", ")
	}
	return s
}

// latencyMetric reports whether a gating metric is a latency (its effects
// are also stated relative to the baseline's mean).
func latencyMetric(m string) bool {
	return m == "latency_s" || m == "interactive_latency_s" || isReplayMetric(m)
}

// isReplayMetric reports whether m is a replay's comparison (the cache
// replay's or the placement replay's).
func isReplayMetric(m string) bool { return m == replayMetric || m == placeReplayMetric }

// windowComparison compares a switchback's arms by window: the unit of
// randomisation is the window, so each window's mean latency is one
// observation. The interval is a bootstrap of the difference of the
// means; the p-value is the rank test's on the window means.
func (c *Controller) windowComparison(a *active, rule stats.Rule) Comparison {
	var means [2][]float64
	for arm := range 2 {
		for _, lat := range a.step[arm].windows {
			if len(lat) > 0 {
				means[arm] = append(means[arm], stats.Mean(lat))
			}
		}
	}
	cmp := Comparison{Metric: "window_mean_latency_s", Test: "bootstrap over windows + mann-whitney", NA: len(means[0]), NB: len(means[1]),
		Alpha: rule.Alpha, Gating: true, P: 1}
	if len(means[0]) == 0 || len(means[1]) == 0 {
		return cmp
	}
	// Sort so that map order does not reach the seeded bootstrap.
	for arm := range 2 {
		slices.Sort(means[arm])
	}
	iv := stats.BootstrapDiff(means[0], means[1], stats.Mean, 2000, 1-rule.Alpha, a.rng)
	mw := stats.MannWhitney(means[0], means[1])
	cmp.Effect, cmp.Low, cmp.High, cmp.P = iv.Estimate, iv.Low, iv.High, mw.P
	// A window is a unit: three per arm is the least that says anything.
	wr := rule
	wr.MinN = 3
	cmp.Verdict = stats.Decide(stats.Comparison{NA: cmp.NA, NB: cmp.NB, Effect: cmp.Effect, Low: cmp.Low, High: cmp.High, P: cmp.P}, wr)
	if cmp.Verdict.Conclusive() && cmp.Low <= 0 && cmp.High >= 0 {
		cmp.Verdict = stats.NoDifference // the interval and the test disagree: do not claim an effect
	}
	return cmp
}

// judgeGuard checks one guard on the candidate arm (a ratio guard: on the
// candidate's figure over the baseline's).
func judgeGuard(g Guard, arms [2]ArmReport, hasBaseline bool, minN int) GuardResult {
	res := GuardResult{Guard: g.Expr}
	base, ratio := strings.CutPrefix(g.Metric, "ratio_")
	v, n, ok := arms[Candidate].metric(base)
	res.N = n
	if ratio {
		if !hasBaseline {
			res.Judged, res.OK = true, true // nothing left to compare with
			return res
		}
		bv, bn, bok := arms[Baseline].metric(base)
		ok = ok && bok && bv > 0
		n = min(n, bn)
		res.N = n
		if ok {
			v /= bv
		}
	}
	if !ok {
		return res
	}
	res.Value = v
	need := g.minSamples(minN)
	if g.Critical {
		need = 1
	}
	res.Judged = n >= need
	res.OK = g.holds(v) || !res.Judged
	if g.Critical && !g.holds(v) {
		res.Judged, res.OK = true, false
	}
	return res
}

// overall is the step's verdict from its gating comparisons: worse if any
// is worse; insufficient data if any has too little; better if any is
// better; else no difference.
func overall(cs []Comparison) stats.Verdict {
	v, seen := stats.NoDifference, false
	for _, c := range cs {
		if !c.Gating {
			continue
		}
		seen = true
		switch c.Verdict {
		case stats.Worse:
			return stats.Worse
		case stats.InsufficientData:
			v = stats.InsufficientData
		case stats.Better:
			if v != stats.InsufficientData {
				v = stats.Better
			}
		}
	}
	if !seen {
		return stats.InsufficientData
	}
	return v
}

func evidenceOf(rep *Report) *Evidence {
	if rep == nil {
		return nil
	}
	ev := &Evidence{Comparisons: rep.Comparisons, Guards: rep.Guards, SRM: rep.SRM, Verdict: rep.Verdict}
	for _, ar := range rep.Arms {
		ev.Arms = append(ev.Arms, ArmSummary{Arm: ar.Arm, Policy: ar.Policy, N: ar.N, Failed: ar.Failed, P95S: ar.P95S})
	}
	return ev
}

// evaluate takes one look's decision; c.mu is held.
func (c *Controller) evaluate(a *active, now time.Time) {
	rec, spec := a.rec, a.rec.Spec
	rep := c.look(a, now)
	ev := evidenceOf(rep)
	if f := rep.Arms[Candidate].Faults; f > 0 {
		c.end(a, now, RolledBack, "rolled_back", fmt.Sprintf("the candidate faulted (%d failed decisions, answered by the native fallback): a fault rolls back at once", f), ev)
		return
	}
	for _, g := range rep.Guards {
		if g.Judged && !g.OK {
			if spec.Type == Canary || strings.HasPrefix(g.Guard, "faults") {
				c.end(a, now, RolledBack, "rolled_back", fmt.Sprintf("guard %s breached: %.4g over %d jobs", g.Guard, g.Value, g.N), ev)
				return
			}
		}
	}
	elapsed := now.Sub(rec.StartedAt)
	switch spec.Type {
	case Canary:
		if rep.Verdict == stats.Worse {
			c.end(a, now, RolledBack, "rolled_back", "the candidate is worse than the baseline: "+worst(rep.Comparisons), ev)
			return
		}
		if elapsed >= time.Duration(spec.Deadline) {
			// Not a rollback: nothing showed the candidate worse. It is
			// not promoted either (it could not rule out max_regression);
			// the baseline keeps serving and the record states what the
			// canary could have seen (end adds the power).
			c.end(a, now, Inconclusive, "inconclusive", fmt.Sprintf("progress deadline %s passed at step %d (%d%%) without a decision; the baseline keeps serving",
				time.Duration(spec.Deadline), rec.Step, rep.Share), ev)
			return
		}
		if why := c.holdReason(a, rep, now); why != "" {
			c.decide(a, now, "hold", why, ev)
			return
		}
		if rec.Step == len(spec.Steps)-1 {
			c.end(a, now, Promoted, "promoted", fmt.Sprintf("passed all %d steps", len(spec.Steps)), ev)
			return
		}
		c.decide(a, now, "advance", fmt.Sprintf("step %d (%d%%) passed: %s", rec.Step, rep.Share, rep.Verdict), ev)
		c.startStep(a, now, rec.Step+1, c.workers())
	default:
		conclusive := rep.Verdict.Conclusive() && (rep.SRM == nil || !rep.SRM.Mismatch)
		if elapsed >= time.Duration(spec.Deadline) || conclusive && now.Sub(rec.StepStartedAt) >= time.Duration(spec.StepDuration) {
			verdict := rep.Verdict.String()
			if rep.Verdict == stats.InsufficientData {
				verdict = "inconclusive"
			}
			c.end(a, now, Completed, verdict, fmt.Sprintf("after %s: %s", elapsed.Round(time.Second), summary(rep)), ev)
			return
		}
		c.decide(a, now, "hold", "collecting until a verdict or the deadline", ev)
	}
	if err := c.persist(); err != nil {
		c.log.Error().Err(err).Str("experiment", rec.ID).Msg("save experiment record")
	}
}

// holdReason says why a canary step cannot advance yet ("" when it can).
// Insufficient data holds; it never passes.
func (c *Controller) holdReason(a *active, rep *Report, now time.Time) string {
	rec, spec := a.rec, a.rec.Spec
	var why []string
	if left := time.Duration(spec.StepDuration) - now.Sub(rec.StepStartedAt); left > 0 {
		why = append(why, fmt.Sprintf("the step lasts at least %s", time.Duration(spec.StepDuration)))
	}
	if rep.Share < 100 {
		// An early step limits the blast radius; it needs min_samples
		// jobs per arm, not a bounded test: the tests run over the whole
		// experiment, and a one-worker step alone rarely bounds anything
		// in the deadline. The last step with a baseline must bound
		// (below), so insufficient data still never promotes.
		for _, cm := range rep.Comparisons {
			if cm.Gating && cm.Metric == "latency_s" && (cm.NA < spec.MinSamples || cm.NB < spec.MinSamples) {
				// The counts are in the evidence: a reason that changed
				// with every job would not coalesce the holds.
				why = append(why, fmt.Sprintf("insufficient data (want %d jobs per arm; counts in the evidence)", spec.MinSamples))
			}
		}
		// The last step with a baseline is the canary's last chance to
		// see a regression: it holds until both latency tests rule out
		// one of max_regression (non-inferiority; RATIONALE.md), so a
		// promotion always means "no regression larger than that".
		// Under a true regression of that size the bound falls below
		// it with probability at most alpha.
		if next := rec.Step + 1; next < len(spec.Steps) && spec.Steps[next] >= 100 && spec.Type == Canary {
			for _, cm := range rep.Comparisons {
				if !cm.Gating || !latencyMetric(cm.Metric) {
					continue
				}
				if isReplayMetric(cm.Metric) && cm.BaselineMean <= 0 && cm.Verdict != stats.InsufficientData {
					continue // neither policy's answers cost anything: nothing to bound
				}
				if cm.Verdict == stats.InsufficientData || cm.BaselineMean <= 0 {
					why = append(why, fmt.Sprintf("the %s test cannot bound a regression yet", cm.Metric))
				} else if cm.NoWorseThan > c.cfg.MaxRegression*cm.BaselineMean {
					// The bound itself is in the evidence: it moves with
					// the baseline's mean, and the holds should coalesce.
					why = append(why, fmt.Sprintf("the %s test does not yet rule out a regression of %.0f%%", cm.Metric, 100*c.cfg.MaxRegression))
				}
			}
		}
		if rep.SRM != nil && rep.SRM.Mismatch {
			why = append(why, fmt.Sprintf("sample ratio mismatch (p=%.2g): the split is not what was asked", rep.SRM.P))
		}
	} else if rep.Arms[Candidate].N < spec.MinSamples {
		why = append(why, fmt.Sprintf("insufficient data (want %d candidate jobs)", spec.MinSamples))
	}
	for _, g := range rep.Guards {
		if !g.Judged {
			why = append(why, fmt.Sprintf("guard %s lacks samples", g.Guard))
		}
	}
	return strings.Join(why, "; ")
}

func worst(cs []Comparison) string {
	for _, c := range cs {
		if c.Gating && c.Verdict == stats.Worse {
			return fmt.Sprintf("%s %+.4g [%.4g, %.4g], p=%.2g < %.2g", c.Metric, c.Effect, c.Low, c.High, c.P, c.Alpha)
		}
	}
	return ""
}

func summary(rep *Report) string {
	var parts []string
	for _, c := range rep.Comparisons {
		if c.Gating {
			parts = append(parts, fmt.Sprintf("%s %s (n=%d/%d, effect %+.3g, p=%.2g)", c.Metric, c.Verdict, c.NA, c.NB, c.Effect, finite(c.P)))
		}
	}
	return strings.Join(parts, "; ")
}

func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 1
	}
	return x
}

// clean replaces values JSON cannot carry (an unbounded interval, an
// undefined p-value) with neutral ones: no effect, p = 1.
func (c *Comparison) clean() {
	for _, f := range []*float64{&c.Effect, &c.Low, &c.High} {
		if math.IsNaN(*f) || math.IsInf(*f, 0) {
			*f = 0
		}
	}
	c.P = finite(c.P)
}
