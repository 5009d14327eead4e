package stats

// SRMAlpha is the p-value below which a sample-ratio mismatch is reported.
// It is far stricter than the decision alpha, as in GrowthBook and Optimizely,
// because an SRM check runs at every look and a false alarm voids an
// experiment.
const SRMAlpha = 0.001

// SRM is the sample-ratio-mismatch test: a chi-squared goodness-of-fit test
// of the observed counts per arm against the shares the assignment intended
// (shares need not sum to 1; they are normalised). A small p means the
// assignment is broken or one arm loses data, and the experiment's other
// statistics should not be trusted.
//
// Input that cannot be tested (fewer than two arms, lengths that differ, a
// share that is not positive, a negative count, no observations) gives
// chi2 = 0 and p = 1: no evidence of a mismatch.
func SRM(observed []int, expectedShares []float64) (chi2, p float64) {
	if len(observed) < 2 || len(observed) != len(expectedShares) {
		return 0, 1
	}
	var total int
	var shareSum float64
	for i, o := range observed {
		if o < 0 || !(expectedShares[i] > 0) {
			return 0, 1
		}
		total += o
		shareSum += expectedShares[i]
	}
	if total == 0 {
		return 0, 1
	}
	for i, o := range observed {
		e := float64(total) * expectedShares[i] / shareSum
		d := float64(o) - e
		chi2 += d * d / e
	}
	return chi2, ChiSquaredSF(chi2, len(observed)-1)
}
