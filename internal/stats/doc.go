// Package stats holds the statistics that kiln's experiments decide with.
//
// Every function is pure and deterministic: randomness (the bootstrap) comes
// from a *rand.Rand the caller seeds, never from the global source or the
// clock, so that a decision can be replayed from its recorded evidence.
//
// Throughout, the first arm is the baseline (A, the control) and the second
// is the candidate (B, the treatment); every effect is B − A. A negative
// latency effect therefore means the candidate is faster.
//
//	r := stats.MannWhitney(baselineLatencies, candidateLatencies)
//	// r.P, r.HodgesLehmann (median of b−a), r.Low, r.High (95% interval)
//	v := stats.Decide(r.Comparison(), stats.Rule{MinN: 50, Alpha: 0.02, LowerIsBetter: true})
//	if v == stats.InsufficientData { /* hold, never pass */ }
//
// # What is here
//
//   - MannWhitney / MannWhitneyCI: the rank-sum test for latencies, with the
//     Hodges–Lehmann shift and its Moses interval; exact null distribution for
//     small samples without ties (n < 50 per arm, as R's wilcox.test), the
//     tie- and continuity-corrected normal approximation otherwise.
//   - TwoProportion: two-proportion z-test (pooled), with the Newcombe hybrid
//     score interval (and the Wald interval for reference) for hit ratios,
//     error rates and SLO attainment.
//   - Bootstrap / BootstrapDiff: percentile intervals, for switchback windows
//     where the unit is a window, not a job.
//   - Sequential: always-valid monitoring (a normal-mixture SPRT, Johari et
//     al. 2017 "Peeking at A/B tests"; Howard et al. 2021 confidence
//     sequences) so that a canary may look after every window and still keep
//     its type-I error at alpha.
//   - SRM: the sample-ratio-mismatch chi-squared test.
//   - Verdict and Decide: Better, Worse, NoDifference, InsufficientData.
//
// # Notes
//
// The distribution functions (normal CDF and quantile, regularized incomplete
// gamma, chi-squared tail) are written here from their textbook definitions;
// the package has no dependency outside the standard library.
package stats
