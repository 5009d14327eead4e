package experiment

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
)

// A small discrete-event node for the controller's tests: workers that run
// one job at a time, a queue, Poisson arrivals of interactive jobs (with a
// deadline) and batch jobs, exponential service times. It asks the Router
// exactly as the dispatcher's core does (Next, then Place) and reports each
// finished job to the Controller, in virtual time. internal/sim runs the same
// controller on the real dispatcher core with the cost model.

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

type tJob struct {
	id       string
	seq      uint64
	class    job.Class
	arrive   time.Duration
	deadline time.Duration
	service  time.Duration
	start    time.Duration
}

type tWorker struct {
	id    string
	job   *tJob
	until time.Duration
}

type workload struct {
	workers     int
	rate        float64 // arrivals per second
	interactive float64 // share of interactive jobs
	svcI, svcB  time.Duration
	deadline    time.Duration
	burst       int // batch jobs arrive this many at once
	horizon     time.Duration
}

func defaultWorkload() workload {
	// About 80% busy: short interactive jobs with a 20 s deadline, and
	// long batch jobs submitted in bursts of 16 (a batch client's backlog).
	// Priority scheduling meets most deadlines; FIFO makes interactive jobs
	// wait behind each burst.
	return workload{workers: 8, rate: 0.62, interactive: 0.5, svcI: 2 * time.Second, svcB: 20 * time.Second,
		deadline: 20 * time.Second, burst: 16, horizon: 6 * time.Hour}
}

type driver struct {
	t       testing.TB
	wl      workload
	clk     *clock.Fake
	now     time.Duration
	rng     *rand.Rand
	host    *policy.Host
	router  *Router
	ctl     *Controller
	workers []*tWorker
	queue   []*tJob
	seq     uint64
}

func newHost(t testing.TB, scheduling string) *policy.Host {
	t.Helper()
	h, err := policy.NewHost(policy.Config{NativeBuiltins: true, Scheduling: scheduling}, zerolog.Nop(), clock.NewFake(epoch))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newDriver(t testing.TB, wl workload, seed uint64, active string, cfg Config, dir string) *driver {
	t.Helper()
	d := &driver{t: t, wl: wl, clk: clock.NewFake(epoch), rng: rand.New(rand.NewPCG(seed, 1))}
	d.host = newHost(t, active)
	d.router = NewRouter(Policies{Scheduler: d.host.Scheduler(), Balancer: d.host.Balancer(), Batcher: d.host.Batcher(), Evictor: d.host.Evictor()})
	for i := range wl.workers {
		d.workers = append(d.workers, &tWorker{id: fmt.Sprintf("w%02d", i)})
	}
	ids := func() []string {
		var out []string
		for _, w := range d.workers {
			out = append(out, w.id)
		}
		return out
	}
	var err error
	d.ctl, err = New(Options{Config: cfg, Host: d.host, Router: d.router, Clock: d.clk, Seed: seed, Workers: ids, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// service draws a job's run time: within ±50% of its class's mean, as
// runs of one workflow vary.
func (d *driver) service(mean time.Duration) time.Duration {
	return time.Duration((0.5 + d.rng.Float64()) * float64(mean))
}

func (d *driver) expo(mean time.Duration) time.Duration {
	return time.Duration(d.rng.ExpFloat64() * float64(mean))
}

// run simulates until the experiment ends or the horizon; it returns the
// experiment's record.
func (d *driver) run(id string) Record {
	next := d.now + d.expo(time.Duration(float64(time.Second)/d.wl.arrivalRate()))
	for d.now < d.wl.horizon {
		t := next
		for _, w := range d.workers {
			if w.job != nil && w.until < t {
				t = w.until
			}
		}
		if look := d.ctl.Tick(); look.IsZero() {
			break
		} else if lt := look.Sub(epoch); lt < t {
			t = lt
		}
		d.clk.Advance(t - d.now)
		d.now = t
		for _, w := range d.workers {
			if w.job != nil && w.until == d.now {
				d.finish(w)
			}
		}
		if next == d.now {
			d.arrive()
			next = d.now + d.expo(time.Duration(float64(time.Second)/d.wl.arrivalRate()))
		}
		d.dispatch()
	}
	rec, err := d.ctl.Get(id)
	if err != nil {
		d.t.Fatal(err)
	}
	return rec
}

// arrive adds one arrival: an interactive job, or a burst of batch jobs
// (arrivals are drawn so that jobs keep the workload's rate and mix).
func (d *driver) arrive() {
	n, class := 1, job.Interactive
	burst := max(d.wl.burst, 1)
	pi := d.wl.interactive / (d.wl.interactive + (1-d.wl.interactive)/float64(burst))
	if d.rng.Float64() >= pi {
		n, class = burst, job.Batch
	}
	for range n {
		d.seq++
		j := &tJob{id: fmt.Sprintf("j%06d", d.seq), seq: d.seq, arrive: d.now, class: class}
		if class == job.Interactive {
			j.deadline, j.service = d.wl.deadline, d.service(d.wl.svcI)
		} else {
			j.service = d.service(d.wl.svcB)
		}
		d.queue = append(d.queue, j)
	}
}

// arrivalRate is arrival events (not jobs) per second.
func (w workload) arrivalRate() float64 {
	burst := float64(max(w.burst, 1))
	return w.rate * (w.interactive + (1-w.interactive)/burst)
}

func (d *driver) views() ([]decision.JobView, []decision.WorkerView) {
	var qs []decision.JobView
	for i, j := range d.queue[:min(len(d.queue), 256)] {
		qs = append(qs, decision.JobView{ID: j.id, Class: j.class, Seq: uint64(i + 1), Age: d.now - j.arrive,
			DeadlineMS: j.deadline.Milliseconds(), EstimatedCost: j.service})
	}
	var ws []decision.WorkerView
	for _, w := range d.workers {
		v := decision.WorkerView{ID: w.id, Idle: w.job == nil}
		if w.job != nil {
			v.EstimatedWait = w.until - d.now
		}
		ws = append(ws, v)
	}
	return qs, ws
}

func (d *driver) dispatch() {
	for {
		qs, ws := d.views()
		if len(qs) == 0 || !slices.ContainsFunc(ws, func(w decision.WorkerView) bool { return w.Idle }) {
			return
		}
		dec, ok := dispatch.Core{Scheduler: d.router, Balancer: d.router, Batcher: d.router, Evictor: d.router}.Choose(qs, ws)
		if !ok {
			return
		}
		i := slices.IndexFunc(d.queue, func(j *tJob) bool { return j.id == dec.Jobs[0] })
		j := d.queue[i]
		d.queue = slices.Delete(d.queue, i, i+1)
		w := d.workers[slices.IndexFunc(d.workers, func(w *tWorker) bool { return w.id == dec.Worker })]
		j.start = d.now
		w.job, w.until = j, d.now+j.service
	}
}

func (d *driver) finish(w *tWorker) {
	j := w.job
	w.job = nil
	lat := d.now - j.arrive
	d.ctl.Observe(Observation{JobID: j.id, Worker: w.id, Latency: lat, QueueWait: j.start - j.arrive, Run: j.service,
		HasDeadline: j.deadline > 0, MissedDeadline: j.deadline > 0 && lat > j.deadline})
}

func (d *driver) start(spec Spec) Record {
	d.t.Helper()
	rec, err := d.ctl.Start(context.Background(), spec)
	if err != nil {
		d.t.Fatal(err)
	}
	return rec
}

func testConfig() Config {
	c := DefaultConfig()
	c.StepDuration = 5 * time.Minute
	c.Deadline = 6 * time.Hour
	return c
}

func secs(s int) time.Duration { return time.Duration(s) * time.Second }
