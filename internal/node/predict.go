package node

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/predict"
)

// predictEvery is how often the node's predictor plans a warm; a plan is
// cheap (one pass over the models seen), a warm is a transfer.
const predictEvery = 2 * time.Second

// predictWarmTimeout bounds one warm (a remote fetch of a large model
// included), so that no wait in the kernel lacks a deadline.
const predictWarmTimeout = 10 * time.Minute

// nodePredictor is the live predictor (dispatch.predict): it observes every
// job as it first starts (its creation time, its models), and while the
// queue is shorter than the lookahead's window it warms into the RAM tier
// the models internal/predict expects next, through the same PlanWarm the
// simulator replays (internal/sim warm.go). Its hit rate is a metric.
type nodePredictor struct {
	n         *Node
	p         *predict.Predictor
	maxQueued int
	busy      atomic.Bool // a warm is running

	mu                   sync.Mutex
	pending              map[string]int64 // warmed, not used yet: their bytes
	warmed, used, wasted uint64
	// warmedBytes, usedBytes and wastedBytes are the same books in bytes:
	// what a wrong guess cost in transfers.
	warmedBytes, usedBytes, wastedBytes uint64
}

var (
	descPredictWarms = prometheus.NewDesc("kiln_predict_warms_total",
		"Models the predictor warmed into the RAM tier before any queued job needed them (outcome=warmed), and of those, the ones a job then used (used) or that left RAM unused (wasted).",
		[]string{"outcome"}, nil)
	descPredictBytes = prometheus.NewDesc("kiln_predict_warmed_bytes_total",
		"Bytes the predictor warmed into the RAM tier.", nil, nil)
	descPredictOutcomeBytes = prometheus.NewDesc("kiln_predict_outcome_bytes_total",
		"Bytes of the predictor's warms that a job then used (outcome=used) or that left RAM unused (wasted).",
		[]string{"outcome"}, nil)
	descPredictHit = prometheus.NewDesc("kiln_predict_hit_ratio",
		"used / (used + wasted) of the predictor's warms; 0 before any has ended.", nil, nil)
)

func (np *nodePredictor) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPredictWarms
	ch <- descPredictBytes
	ch <- descPredictOutcomeBytes
	ch <- descPredictHit
}

func (np *nodePredictor) Collect(ch chan<- prometheus.Metric) {
	np.mu.Lock()
	warmed, used, wasted, bytes := np.warmed, np.used, np.wasted, np.warmedBytes
	usedBytes, wastedBytes := np.usedBytes, np.wastedBytes
	np.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descPredictWarms, prometheus.CounterValue, float64(warmed), "warmed")
	ch <- prometheus.MustNewConstMetric(descPredictWarms, prometheus.CounterValue, float64(used), "used")
	ch <- prometheus.MustNewConstMetric(descPredictWarms, prometheus.CounterValue, float64(wasted), "wasted")
	ch <- prometheus.MustNewConstMetric(descPredictBytes, prometheus.CounterValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(descPredictOutcomeBytes, prometheus.CounterValue, float64(usedBytes), "used")
	ch <- prometheus.MustNewConstMetric(descPredictOutcomeBytes, prometheus.CounterValue, float64(wastedBytes), "wasted")
	hit := 0.0
	if used+wasted > 0 {
		hit = float64(used) / float64(used+wasted)
	}
	ch <- prometheus.MustNewConstMetric(descPredictHit, prometheus.GaugeValue, hit)
}

// runPredict runs the live predictor until ctx ends, when dispatch.predict
// is on and the node has tiers; the returned function waits for it.
func (n *Node) runPredict(ctx context.Context) (wait func()) {
	if !n.cfg.Dispatch.Predict || n.Tiers == nil {
		return func() {}
	}
	np := &nodePredictor{n: n, p: predict.New(predict.Config{}), maxQueued: max(lookahead(n.cfg.Dispatch), 1),
		pending: map[string]int64{}}
	n.Metrics.Register(np)
	events, unsubscribe := n.Dispatcher.Subscribe(1024)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer unsubscribe()
		np.loop(ctx, events, &wg)
	}()
	return wg.Wait
}

func (np *nodePredictor) loop(ctx context.Context, events <-chan job.Event, wg *sync.WaitGroup) {
	clk := np.n.opts.Clock
	tick := clk.After(predictEvery)
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			if e.Type == job.EventStarted && e.Attempt <= 1 {
				// The dispatcher hands over the job it started; the
				// store is read only for an event without one.
				j := e.Job
				if j == nil {
					j, _ = np.n.Store.Get(e.JobID)
				}
				if j != nil {
					np.observe(j)
				}
			}
		case <-tick:
			tick = clk.After(predictEvery)
			np.settle()
			np.plan(ctx, wg)
		}
	}
}

// observe learns from a job's first start and books the warms it uses.
func (np *nodePredictor) observe(j *job.Job) {
	np.p.Observe(j.CreatedAt, j.Models)
	np.mu.Lock()
	for _, m := range j.Models {
		if b, ok := np.pending[m]; ok {
			delete(np.pending, m)
			np.used++
			np.usedBytes += uint64(b)
		}
	}
	np.mu.Unlock()
}

// settle books as wasted the warmed models that left RAM unused.
func (np *nodePredictor) settle() {
	np.mu.Lock()
	defer np.mu.Unlock()
	for m, b := range np.pending {
		if !np.n.Tiers.InRAM(m) {
			delete(np.pending, m)
			np.wasted++
			np.wastedBytes += uint64(b)
		}
	}
}

// plan asks PlanWarm what to warm while the queue is short, and starts the
// warms on a goroutine of their own, one plan at a time.
func (np *nodePredictor) plan(ctx context.Context, wg *sync.WaitGroup) {
	st := np.n.Store
	if st.QueuedLen(job.Interactive)+st.QueuedLen(job.Batch) >= np.maxQueued || np.busy.Load() {
		return
	}
	ranked := np.p.Ranked(np.n.opts.Clock.Now())
	if len(ranked) == 0 {
		return
	}
	queued := st.Snapshot(0) // shorter than maxQueued: checked above
	needed := map[string]bool{}
	var protect []string
	for _, j := range queued {
		for _, m := range j.Models {
			if !needed[m] {
				needed[m] = true
				protect = append(protect, m)
			}
		}
	}
	// As the simulator (internal/sim warm.go): the room is the tier's
	// target fill, since the slack above it is where the tier's own
	// eviction lands the next load; models a worker holds in VRAM are
	// served from there; a model's reload cost is a disk read, and a
	// source read too when the disk tier lacks it.
	room := predict.Room{Above: map[string]bool{}}
	stats := np.n.Tiers.Stats()
	var remoteBytesPerS float64
	for _, s := range stats {
		switch s.Name {
		case "ram":
			room.Capacity = int64(float64(s.CapacityBytes) * np.n.cfg.Tiers.WithDefaults().RAM.TargetFill)
		case "remote":
			remoteBytesPerS = s.BandwidthBytesPerS
		}
	}
	if np.n.Pool != nil {
		for _, w := range np.n.Pool.Workers() {
			for m := range w.Resident() {
				room.Above[m] = true
			}
		}
	}
	for _, e := range np.n.Tiers.RAMEntries() {
		room.Entries = append(room.Entries, predict.Entry{Model: e.Model, Bytes: e.Bytes, Protected: e.Pinned || needed[e.Model]})
	}
	size := func(m string) (int64, bool) {
		e, err := np.n.Catalog.Lookup(m)
		return e.Bytes, err == nil
	}
	costCfg := np.n.cfg.Cost.WithDefaults()
	room.ReloadCost = func(m string) float64 {
		b, _ := size(m)
		took := costCfg.DiskReadTime(b)
		if _, disk := np.n.Tiers.Holds(m); !disk {
			// Until a fetch has measured the source, price it as a
			// second disk read rather than as free.
			if remoteBytesPerS > 0 {
				took += costCfg.MoveTime(b, remoteBytesPerS)
			} else {
				took *= 2
			}
		}
		return took.Seconds()
	}
	plan := predict.PlanWarm(ranked, size, room, predict.WarmOptions{})
	if len(plan.Warm) == 0 || !np.busy.CompareAndSwap(false, true) {
		return
	}
	log := logging.Component(np.n.opts.Log, "predict")
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer np.busy.Store(false)
		evict := plan.Evict
		for _, m := range plan.Warm {
			wctx, cancel := context.WithTimeout(ctx, predictWarmTimeout)
			err := np.n.Tiers.Warm(wctx, m, evict, protect)
			cancel()
			evict = nil // dropped before the first warm
			if err != nil {
				if ctx.Err() == nil {
					log.Debug().Err(err).Str("model", m).Msg("warm")
				}
				continue
			}
			np.mu.Lock()
			if _, ok := np.pending[m]; !ok {
				b, _ := size(m)
				np.pending[m] = b
				np.warmed++
				np.warmedBytes += uint64(b)
			}
			np.mu.Unlock()
		}
	}()
}
