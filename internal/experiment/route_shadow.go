package experiment

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// RoutingShadow evaluates routing policies on a cluster's live submits at
// no risk to them, as the ghost caches do eviction policies: every job the
// node routes is also put to each candidate routing policy, with the same
// views of the nodes and the same random word, and each answer is priced
// as the job would have paid before starting there (policy.RoutePrices:
// network delay, the node's estimated wait, the loads of its models from
// that node's fastest tier holding each). The report puts each
// candidate's mean price and model loads beside the live decisions'. A
// price is the nodes' own estimate at the instant of the submit; what a
// different choice would have done to later jobs (the caches it would
// have filled, the queues it would have grown) is not in it: for that, a
// routing experiment.
//
// The candidates are asked on the shadow's own goroutine from a bounded
// queue that drops rather than wait: a slow candidate loses decisions
// (counted), never delays a submit.
type RoutingShadow struct {
	in      chan routedJob
	dropped atomic.Int64
	log     zerolog.Logger

	mu    sync.Mutex
	live  shadowRow
	cands []*shadowCand
	spent time.Duration // the candidates' and pricing's time, all decisions
}

// routedJob is one live decision: the question and the node it chose.
type routedJob struct {
	req  decision.RouteRequest
	node string
	ok   bool
}

type shadowCand struct {
	name    string
	arm     *policy.Arm
	faults0 int64
	row     shadowRow
}

// shadowRow is one policy's sums over the decisions.
type shadowRow struct {
	decisions, agreed, none int64
	price                   time.Duration
	loads                   int64
}

// routingShadowQueue bounds the decisions waiting for the shadow.
const routingShadowQueue = 1024

// NewRoutingShadow pins each named routing policy ("least-loaded",
// "mine@2") in host; a name it cannot pin is logged and left out.
func NewRoutingShadow(ctx context.Context, host Host, names []string, log zerolog.Logger) *RoutingShadow {
	s := &RoutingShadow{in: make(chan routedJob, routingShadowQueue), log: log}
	for _, ref := range names {
		name, num, err := policy.ParseRef(ref)
		if err == nil {
			var arm *policy.Arm
			if arm, err = host.Arm(ctx, abi.KindRouting, name, num); err == nil {
				s.cands = append(s.cands, &shadowCand{name: arm.Ref(), arm: arm, faults0: arm.Faults()})
				continue
			}
		}
		log.Warn().Err(err).Str("policy", ref).Msg("routing shadow: candidate left out")
	}
	return s
}

// Wrap returns a router that decides as inner does and hands each decision
// to the shadow.
func (s *RoutingShadow) Wrap(inner decision.Router) decision.Router {
	return shadowRouter{s: s, inner: inner}
}

type shadowRouter struct {
	s     *RoutingShadow
	inner decision.Router
}

// Route implements decision.Router.
func (r shadowRouter) Route(req decision.RouteRequest) (string, bool) {
	node, ok := r.inner.Route(req)
	select {
	case r.s.in <- routedJob{req: req, node: node, ok: ok}:
	default:
		r.s.dropped.Add(1)
	}
	return node, ok
}

// Run asks the candidates about each decision until ctx ends.
func (s *RoutingShadow) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-s.in:
			s.judge(d)
		}
	}
}

// judge prices one decision's live answer and each candidate's.
func (s *RoutingShadow) judge(d routedJob) {
	start := time.Now()
	price, loads := policy.RoutePrices(d.req)
	index := func(id string) int {
		for i := range d.req.Nodes {
			if d.req.Nodes[i].ID == id {
				return i
			}
		}
		return -1
	}
	add := func(row *shadowRow, node string, ok bool) {
		row.decisions++
		i := index(node)
		if !ok || i < 0 {
			row.none++
			return
		}
		row.price += price[i]
		row.loads += int64(loads[i])
	}
	answers := make([]string, len(s.cands))
	oks := make([]bool, len(s.cands))
	for i, c := range s.cands {
		answers[i], oks[i] = c.arm.Router().Route(d.req)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	add(&s.live, d.node, d.ok)
	for i, c := range s.cands {
		add(&c.row, answers[i], oks[i])
		if oks[i] == d.ok && answers[i] == d.node {
			c.row.agreed++
		}
	}
	s.spent += time.Since(start)
}

// RoutingShadowReport is the shadow's state: GET /v1/cluster/shadow.
type RoutingShadowReport struct {
	// Decisions is how many live decisions the shadow judged; Dropped how
	// many it lost for want of time (its queue was full).
	Decisions int64 `json:"decisions"`
	Dropped   int64 `json:"dropped"`
	// Live is what the node's own decisions priced at; Candidates what
	// each candidate's would have.
	Live       RoutingShadowRow   `json:"live"`
	Candidates []RoutingShadowRow `json:"candidates"`
	// OverheadPerDecisionUS is the shadow's time per decision judged
	// (every candidate asked and the answers priced), off the submit's
	// path.
	OverheadPerDecisionUS float64 `json:"overhead_per_decision_us"`
}

// RoutingShadowRow is one policy's figures over the decisions judged.
type RoutingShadowRow struct {
	Policy string `json:"policy,omitempty"`
	// MeanPriceS is the mean price of the nodes it chose, in seconds: the
	// delay, wait and loads before the job could have started there, by
	// the nodes' estimates at the submit.
	MeanPriceS float64 `json:"mean_price_s"`
	// VsLive is MeanPriceS over the live decisions' (1: as good; above
	// 1: its choices would have cost more).
	VsLive float64 `json:"vs_live,omitempty"`
	// ModelLoads is how many of the jobs' models its choices would have
	// had to load into VRAM.
	ModelLoads int64 `json:"model_loads"`
	// Agreed is the share of decisions in which it chose the live node.
	Agreed float64 `json:"agreed,omitempty"`
	// NoNode counts the decisions for which it chose no node.
	NoNode int64 `json:"no_node,omitempty"`
	// Faults are the faults (trap, timeout, invalid answer) of the
	// candidate's version since the shadow began, each answered by the
	// native least-loaded policy as live; a version that is also the
	// active policy counts its live faults here too.
	Faults int64 `json:"faults,omitempty"`
}

// Report returns the shadow's figures so far.
func (s *RoutingShadow) Report() RoutingShadowReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	row := func(r shadowRow) RoutingShadowRow {
		out := RoutingShadowRow{ModelLoads: r.loads, NoNode: r.none}
		if n := r.decisions - r.none; n > 0 {
			out.MeanPriceS = r.price.Seconds() / float64(n)
		}
		return out
	}
	rep := RoutingShadowReport{Decisions: s.live.decisions, Dropped: s.dropped.Load(), Live: row(s.live)}
	for _, c := range s.cands {
		r := row(c.row)
		r.Policy = c.name
		if rep.Live.MeanPriceS > 0 {
			r.VsLive = r.MeanPriceS / rep.Live.MeanPriceS
		}
		if c.row.decisions > 0 {
			r.Agreed = float64(c.row.agreed) / float64(c.row.decisions)
		}
		r.Faults = c.arm.Faults() - c.faults0
		rep.Candidates = append(rep.Candidates, r)
	}
	if s.live.decisions > 0 {
		rep.OverheadPerDecisionUS = float64(s.spent.Microseconds()) / float64(s.live.decisions)
	}
	return rep
}

var (
	descRoutingShadowDecisions = prometheus.NewDesc("kiln_routing_shadow_decisions_total",
		"Routing decisions of this cluster node that the routing shadow judged (outcome=judged) or dropped for want of time (dropped).",
		[]string{"outcome"}, nil)
	descRoutingShadowPrice = prometheus.NewDesc("kiln_routing_shadow_mean_time_to_start_seconds",
		"Mean time before a routed job could have started on the node a policy chose (network delay, wait and model loads, by the nodes' estimates at the submit): the node's own decisions (policy=\"live\") and each shadowed routing policy's.",
		[]string{"policy"}, nil)
	descRoutingShadowLoads = prometheus.NewDesc("kiln_routing_shadow_model_loads_total",
		"Models the nodes a policy chose would have had to load into VRAM (policy=\"live\": the node's own decisions).",
		[]string{"policy"}, nil)
)

// Describe implements prometheus.Collector.
func (s *RoutingShadow) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRoutingShadowDecisions
	ch <- descRoutingShadowPrice
	ch <- descRoutingShadowLoads
}

// Collect implements prometheus.Collector.
func (s *RoutingShadow) Collect(ch chan<- prometheus.Metric) {
	rep := s.Report()
	ch <- prometheus.MustNewConstMetric(descRoutingShadowDecisions, prometheus.CounterValue, float64(rep.Decisions), "judged")
	ch <- prometheus.MustNewConstMetric(descRoutingShadowDecisions, prometheus.CounterValue, float64(rep.Dropped), "dropped")
	rows := append([]RoutingShadowRow{rep.Live}, rep.Candidates...)
	rows[0].Policy = "live"
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(descRoutingShadowPrice, prometheus.GaugeValue, r.MeanPriceS, r.Policy)
		ch <- prometheus.MustNewConstMetric(descRoutingShadowLoads, prometheus.CounterValue, float64(r.ModelLoads), r.Policy)
	}
}
