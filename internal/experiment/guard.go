package experiment

import (
	"fmt"
	"iter"
	"math"
	"strconv"
	"strings"
	"time"
)

// Guard is one limit on the candidate arm: Metric Op Value. A ratio guard
// (metric "ratio_p95", ...) limits the candidate's figure divided by the
// baseline's. A breached guard fails the step once the arm has enough
// samples for the metric; a critical guard (written with a trailing "!",
// and "faults" always) fails it at its first breach.
type Guard struct {
	Expr     string  `json:"expr"`
	Metric   string  `json:"metric"`
	Op       string  `json:"op"`
	Value    float64 `json:"value"` // seconds for latencies
	Critical bool    `json:"critical,omitempty"`
}

// guardMetrics are the metrics a guard may name, with whether the value is
// a duration.
var guardMetrics = map[string]bool{
	"p50": true, "p90": true, "p95": true, "p99": true, "mean": true,
	"queue_p95": true, "load_p95": true,
	"error_rate": false, "deadline_miss_rate": false, "faults": false, "hit_ratio": false,
}

var guardOps = []string{"<=", ">=", "==", "!=", "<", ">"}

// ParseGuard parses "p95<=30s", "error_rate<=0.01", "faults==0",
// "ratio_p95<=1.2" or "p99<=60s!".
func ParseGuard(s string) (Guard, error) {
	g := Guard{Expr: strings.TrimSpace(s)}
	e := strings.ReplaceAll(g.Expr, " ", "")
	if c, ok := strings.CutSuffix(e, "!"); ok {
		e, g.Critical = c, true
	}
	var lhs, rhs string
	for _, op := range guardOps {
		if i := strings.Index(e, op); i > 0 {
			lhs, g.Op, rhs = e[:i], op, e[i+len(op):]
			break
		}
	}
	if g.Op == "" {
		return g, fmt.Errorf("guard %q: want METRIC OP VALUE, e.g. p95<=30s or error_rate<=0.01", s)
	}
	g.Metric = lhs
	base, ratio := strings.CutPrefix(lhs, "ratio_")
	isDur, ok := guardMetrics[base]
	if !ok || ratio && (base == "faults") {
		return g, fmt.Errorf("guard %q: unknown metric %q (want p50, p90, p95, p99, mean, queue_p95, load_p95, error_rate, "+
			"deadline_miss_rate, faults, hit_ratio, or ratio_ of one of them)", s, lhs)
	}
	if isDur && !ratio {
		d, err := time.ParseDuration(rhs)
		if err != nil {
			return g, fmt.Errorf("guard %q: %q is not a duration such as 30s", s, rhs)
		}
		g.Value = d.Seconds()
	} else {
		v, err := strconv.ParseFloat(rhs, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return g, fmt.Errorf("guard %q: %q is not a number", s, rhs)
		}
		g.Value = v
	}
	if base == "faults" {
		g.Critical = true
	}
	return g, nil
}

// holds reports whether x satisfies the guard.
func (g Guard) holds(x float64) bool {
	switch g.Op {
	case "<=":
		return x <= g.Value
	case ">=":
		return x >= g.Value
	case "==":
		return x == g.Value
	case "!=":
		return x != g.Value
	case "<":
		return x < g.Value
	case ">":
		return x > g.Value
	}
	return false
}

// minSamples is how many jobs a guard's metric needs before a breach
// counts: a p99 needs 380 (DESIGN §4.7), other metrics min.
func (g Guard) minSamples(min int) int {
	if strings.HasSuffix(g.Metric, "p99") {
		return max(min, 380)
	}
	return min
}

func splitComma(s string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for f := range strings.SplitSeq(s, ",") {
			if f = strings.TrimSpace(f); f != "" && !yield(f) {
				return
			}
		}
	}
}
