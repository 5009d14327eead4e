package tune

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/sim"
)

// DefaultTraceCapacity is how many recent arrivals a Recorder keeps.
const DefaultTraceCapacity = 20000

// TraceFile is the recorder's file in the data dir.
const TraceFile = "arrivals.csv"

// saveEvery is how often, in clock time, a feeding Recorder persists its
// ring when it has changed.
const saveEvery = time.Minute

// Arrival is one job as the simulator needs it: when it arrived, the
// models it needs, its class and deadline.
type Arrival struct {
	At         time.Time
	Models     []string
	Class      job.Class
	DeadlineMS int64
}

// Recorder keeps a bounded ring of the node's recent arrivals, persisted
// under the data dir so that a restart does not forget the traffic, and
// serves them as a trace for the simulator. It is safe for concurrent use.
type Recorder struct {
	path string
	clk  clock.Clock

	mu    sync.Mutex
	ring  []Arrival
	next  int
	full  bool
	dirty bool
}

// NewRecorder returns a recorder with room for capacity arrivals
// (DefaultTraceCapacity if ≤ 0) that persists to path ("" keeps it in
// memory). Arrivals already in path are loaded; a file that cannot be read
// is reported and the recorder starts empty (it is a cache of recent
// traffic, not a record that must survive).
func NewRecorder(path string, capacity int, clk clock.Clock) (*Recorder, error) {
	if capacity <= 0 {
		capacity = DefaultTraceCapacity
	}
	if clk == nil {
		return nil, errors.New("tune: recorder: nil clock")
	}
	r := &Recorder{path: path, clk: clk, ring: make([]Arrival, 0, capacity)}
	if path == "" {
		return r, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("tune: recorder: %w", err)
	}
	defer f.Close()
	arr, err := readArrivals(f)
	for _, a := range arr {
		r.add(a)
	}
	r.dirty = false
	if err != nil {
		return r, fmt.Errorf("tune: recorder: %s: %w", path, err)
	}
	return r, nil
}

func (r *Recorder) add(a Arrival) {
	if len(r.ring) < cap(r.ring) {
		r.ring = append(r.ring, a)
	} else {
		r.ring[r.next] = a
		r.full = true
	}
	r.next = (r.next + 1) % cap(r.ring)
	r.dirty = true
}

// Record adds one arrival, dropping the oldest when the ring is full.
func (r *Recorder) Record(a Arrival) {
	a.Models = append([]string(nil), a.Models...)
	r.mu.Lock()
	r.add(a)
	r.mu.Unlock()
}

// Len is the number of arrivals held.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ring)
}

// Arrivals returns the held arrivals, oldest first.
func (r *Recorder) Arrivals() []Arrival {
	r.mu.Lock()
	out := make([]Arrival, 0, len(r.ring))
	if r.full {
		out = append(out, r.ring[r.next:]...)
		out = append(out, r.ring[:r.next]...)
	} else {
		out = append(out, r.ring...)
	}
	r.mu.Unlock()
	// Jobs are recorded when they start, so arrivals can be slightly out
	// of order; the trace must not be.
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// Requests returns the last limit arrivals (all if limit ≤ 0) as simulator
// requests, times relative to the first of them.
func (r *Recorder) Requests(limit int) []sim.Request {
	arr := r.Arrivals()
	if limit > 0 && len(arr) > limit {
		arr = arr[len(arr)-limit:]
	}
	reqs := make([]sim.Request, len(arr))
	for i, a := range arr {
		reqs[i] = sim.Request{Time: a.At.Sub(arr[0].At), Models: a.Models, Class: a.Class, DeadlineMS: a.DeadlineMS}
	}
	return reqs
}

// RecentTrace is Requests(limit) for the HTTP API (api.TraceSource): how
// many arrivals there are, and a function that writes them as a trace CSV
// (sim.WriteTrace). The API takes it through that interface so that it
// does not import the tuner and, through it, the simulator.
func (r *Recorder) RecentTrace(limit int) (arrivals int, write func(io.Writer) error) {
	reqs := r.Requests(limit)
	return len(reqs), func(w io.Writer) error { return sim.WriteTrace(w, reqs) }
}

// Save writes the ring to the recorder's file if it changed, atomically
// (a temporary file renamed over the old one).
func (r *Recorder) Save() error {
	if r.path == "" {
		return nil
	}
	r.mu.Lock()
	dirty := r.dirty
	r.dirty = false
	r.mu.Unlock()
	if !dirty {
		return nil
	}
	arr := r.Arrivals()
	tmp, err := os.CreateTemp(filepath.Dir(r.path), ".arrivals-*.csv")
	if err != nil {
		return fmt.Errorf("tune: save arrivals: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeArrivals(tmp, arr); err != nil {
		tmp.Close()
		return fmt.Errorf("tune: save arrivals: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tune: save arrivals: %w", err)
	}
	if err := os.Rename(tmp.Name(), r.path); err != nil {
		return fmt.Errorf("tune: save arrivals: %w", err)
	}
	return nil
}

// The persisted file is a trace CSV whose time_s is Unix time, so that
// arrivals from before a restart keep their place.
func writeArrivals(w io.Writer, arr []Arrival) error {
	if _, err := io.WriteString(w, "# kiln's recent arrivals; time_s is Unix time (GET /v1/experiments/trace rebases it to 0)\n"); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"time_s", "models", "class", "deadline_ms"})
	for _, a := range arr {
		_ = cw.Write([]string{strconv.FormatFloat(float64(a.At.UnixNano())/1e9, 'f', 3, 64),
			strings.Join(a.Models, ";"), string(a.Class), strconv.FormatInt(a.DeadlineMS, 10)})
	}
	cw.Flush()
	return cw.Error()
}

func readArrivals(rd io.Reader) ([]Arrival, error) {
	cr := csv.NewReader(rd)
	cr.Comment = '#'
	cr.FieldsPerRecord = 4
	head, err := cr.Read()
	if err != nil {
		return nil, err
	}
	if strings.Join(head, ",") != "time_s,models,class,deadline_ms" {
		return nil, fmt.Errorf("unexpected header %q", strings.Join(head, ","))
	}
	var out []Arrival
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		ts, err1 := strconv.ParseFloat(rec[0], 64)
		dl, err2 := strconv.ParseInt(rec[3], 10, 64)
		if err1 != nil || err2 != nil || math.IsNaN(ts) || math.IsInf(ts, 0) || rec[1] == "" {
			return out, fmt.Errorf("bad line %q", strings.Join(rec, ","))
		}
		sec, frac := math.Modf(ts)
		out = append(out, Arrival{At: time.Unix(int64(sec), int64(frac*1e9)).UTC(), Models: strings.Split(rec[1], ";"),
			Class: job.Class(rec[2]), DeadlineMS: dl})
	}
}

// Feed records the first start of every job from the dispatcher's events
// until ctx ends or ch closes, persisting the ring every minute of clock
// time and at the end. A job's arrival is its creation time; jobs are
// recorded when they start, when their models are known to be valid.
// lookup fetches a job by id (the store).
func (r *Recorder) Feed(ctx context.Context, ch <-chan job.Event, lookup func(id string) (*job.Job, error)) error {
	lastSave := r.clk.Now()
	defer r.Save()
	for {
		select {
		case <-ctx.Done():
			return r.Save()
		case e, ok := <-ch:
			if !ok {
				return r.Save()
			}
			if e.Type != job.EventStarted || e.Attempt > 1 {
				continue
			}
			// The dispatcher hands over the job it started; lookup is
			// for events that carry none.
			j := e.Job
			if j == nil {
				var err error
				if j, err = lookup(e.JobID); err != nil || j == nil {
					continue
				}
			}
			r.Record(Arrival{At: j.CreatedAt, Models: j.Models, Class: j.Class, DeadlineMS: j.DeadlineMS})
			if now := r.clk.Now(); now.Sub(lastSave) >= saveEvery {
				lastSave = now
				if err := r.Save(); err != nil {
					return err
				}
			}
		}
	}
}
