package dashboard

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/httpjson"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/tier"
	"github.com/kiln-gpu/kiln/internal/worker"
)

//go:embed assets
var assetFS embed.FS

// Sources are the kernel parts the dashboard reads. Nil parts leave their
// panels empty (a kiln without tiers, a test without a dispatcher).
type Sources struct {
	Store      *job.Store
	Devices    *device.Set
	Pool       *worker.Pool
	Tiers      *tier.Manager
	Catalog    *catalog.Catalog
	Dispatcher *dispatch.Dispatcher
	Clock      clock.Clock
	Log        zerolog.Logger
	// Version is kiln's version, shown in the page's header.
	Version string
}

// The ledger is sampled every sampleEvery and kept for historyLen samples
// (an hour): enough to see a load, an eviction storm or a leak, and small
// (a few hundred KiB) whatever the traffic.
const (
	sampleEvery = 5 * time.Second
	historyLen  = 720
	eventsKept  = 200
)

// Dashboard serves the page and its JSON views.
type Dashboard struct {
	src Sources

	mu      sync.Mutex
	history []Sample // ring of the ledger's samples, oldest first
	events  []Event  // the most recent job events, oldest first
	subs    map[chan Event]struct{}
	// done is closed when Run ends, so that event streams end with kiln
	// rather than holding its shutdown.
	done    chan struct{}
	running bool
}

// New returns a dashboard over src. Call Register to serve it and Run to
// sample the ledger and record events.
func New(src Sources) *Dashboard {
	if src.Clock == nil {
		src.Clock = clock.Real()
	}
	return &Dashboard{src: src, subs: map[chan Event]struct{}{}, done: make(chan struct{})}
}

// Mux is where Register adds its routes: a *http.ServeMux, or internal/api's
// server, which also lists them.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register adds the dashboard's routes to mux: the page at GET / (exactly
// "/": every other path stays with its own handler or the API's 404), its
// assets under /dashboard/, and the JSON views under /v1/dashboard.
func (d *Dashboard) Register(mux Mux) {
	assets, err := fs.Sub(assetFS, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(assets)
	mux.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		// The page runs only its own scripts and talks only to this kiln.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.ServeFileFS(w, r, assets, "index.html")
	}))
	mux.Handle("GET /dashboard/", http.StripPrefix("/dashboard/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || r.URL.Path == "index.html" || r.URL.Path[len(r.URL.Path)-1] == '/' {
			// No directory listings, and one address for the page.
			httpjson.Write(w, http.StatusNotFound, map[string]any{"error": map[string]any{"type": "not_found", "message": "no dashboard asset " + r.URL.Path}})
			return
		}
		if _, err := fs.Stat(assets, r.URL.Path); err != nil {
			httpjson.Write(w, http.StatusNotFound, map[string]any{"error": map[string]any{"type": "not_found", "message": "no dashboard asset " + r.URL.Path}})
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})))
	mux.Handle("GET /v1/dashboard", http.HandlerFunc(d.serveSnapshot))
	mux.Handle("GET /v1/dashboard/vram", http.HandlerFunc(d.serveHistory))
	mux.Handle("GET /v1/dashboard/events", http.HandlerFunc(d.serveEvents))
}

// Run samples the ledger every sampleEvery and records the dispatcher's
// events until ctx ends. It returns when ctx ends; call it once.
func (d *Dashboard) Run(ctx context.Context) {
	d.mu.Lock()
	if d.running {
		d.mu.Unlock()
		return
	}
	d.running = true
	d.mu.Unlock()
	defer close(d.done)
	var events <-chan job.Event
	if d.src.Dispatcher != nil {
		ch, cancel := d.src.Dispatcher.Subscribe(1024)
		defer cancel()
		events = ch
	}
	d.sample()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	lastProgress := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.sample()
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			now := d.src.Clock.Now()
			if e.Type == job.EventProgress {
				// A sampler sends a frame per step; four a second per job
				// is all a progress bar needs.
				if now.Sub(lastProgress[e.JobID]) < 250*time.Millisecond {
					continue
				}
				lastProgress[e.JobID] = now
			} else if e.Type == job.EventFinished {
				delete(lastProgress, e.JobID)
			}
			d.record(eventOf(e, now))
		}
	}
}

// Event is one job event as the page shows it.
type Event struct {
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Job    string    `json:"job"`
	Worker string    `json:"worker,omitempty"`
	Node   string    `json:"node,omitempty"`
	Value  int       `json:"value,omitempty"`
	Max    int       `json:"max,omitempty"`
	State  string    `json:"state,omitempty"`
	Error  string    `json:"error,omitempty"`
}

func eventOf(e job.Event, now time.Time) Event {
	return Event{Time: now.UTC(), Type: string(e.Type), Job: e.JobID, Worker: e.Worker, Node: e.Node,
		Value: e.Value, Max: e.Max, State: string(e.State), Error: e.Error}
}

// record keeps e among the recent events (progress frames are streamed,
// not kept: they would push the events worth reading out) and sends it to
// every open stream; a stream that does not keep up loses it.
func (d *Dashboard) record(e Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Type != string(job.EventProgress) {
		if len(d.events) == eventsKept {
			copy(d.events, d.events[1:])
			d.events = d.events[:eventsKept-1]
		}
		d.events = append(d.events, e)
	}
	for ch := range d.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Sample is the ledger of every device at one time.
type Sample struct {
	Time    time.Time      `json:"time"`
	Devices []DeviceSample `json:"devices"`
}

// DeviceSample is one device's ledger and memory at a sample's time.
type DeviceSample struct {
	Index    int     `json:"index"`
	Name     string  `json:"name"`
	Total    uint64  `json:"total"`
	Usable   uint64  `json:"usable"`
	Reserved uint64  `json:"reserved"`
	Used     *uint64 `json:"used"` // as the device reports it; null when it cannot
	Free     *uint64 `json:"free"`
	// Models is the reserved bytes by what they were reserved for (a
	// model id, a worker's context, a stage's activations).
	Models map[string]uint64 `json:"models"`
}

func (d *Dashboard) ledger() []DeviceSample {
	if d.src.Devices == nil {
		return []DeviceSample{}
	}
	st := d.src.Devices.Describe()
	out := make([]DeviceSample, len(st))
	for i, s := range st {
		ds := DeviceSample{Index: s.Index, Name: s.Name, Total: s.MemoryTotal, Usable: s.Usable,
			Reserved: s.Reserved, Used: s.MemoryUsed, Free: s.MemoryFree, Models: map[string]uint64{}}
		if l := d.src.Devices.Ledger(i); l != nil {
			for _, r := range l.Snapshot() {
				ds.Models[r.Key] += r.Bytes
			}
		}
		out[i] = ds
	}
	return out
}

func (d *Dashboard) sample() {
	s := Sample{Time: d.src.Clock.Now().UTC(), Devices: d.ledger()}
	d.mu.Lock()
	if len(d.history) == historyLen {
		copy(d.history, d.history[1:])
		d.history = d.history[:historyLen-1]
	}
	d.history = append(d.history, s)
	d.mu.Unlock()
}

// Snapshot is GET /v1/dashboard: what the /v1 endpoints do not already say.
type Snapshot struct {
	Time    time.Time `json:"time"`
	Version string    `json:"version,omitempty"`
	// Queue is the jobs waiting and running, by class then state.
	Queue map[string]map[string]int `json:"queue"`
	// Counts is every job in the store by state, as GET /v1/jobs counts.
	Counts map[string]int `json:"counts"`
	// Ledger is each device's VRAM ledger now.
	Ledger []DeviceSample `json:"ledger"`
	// Residency says where each catalog model's bytes are.
	Residency []Residency `json:"residency"`
	// Events are the most recent job events, newest last.
	Events []Event `json:"events"`
}

// Residency is where one model is: the workers holding it in VRAM, and
// whether the RAM (L2) and disk (L3) tiers hold its bytes.
type Residency struct {
	Model string   `json:"model"`
	Bytes int64    `json:"bytes"`
	VRAM  []string `json:"vram"` // worker ids
	RAM   bool     `json:"ram"`
	Disk  bool     `json:"disk"`
}

func (d *Dashboard) snapshot() Snapshot {
	s := Snapshot{Time: d.src.Clock.Now().UTC(), Version: d.src.Version,
		Queue: map[string]map[string]int{}, Counts: map[string]int{}, Ledger: d.ledger(), Residency: []Residency{}}
	for _, c := range []job.Class{job.Interactive, job.Batch} {
		s.Queue[string(c)] = map[string]int{string(job.Queued): 0, string(job.Running): 0}
	}
	if st := d.src.Store; st != nil {
		for state, n := range st.Counts() {
			s.Counts[string(state)] = n
		}
		for _, c := range []job.Class{job.Interactive, job.Batch} {
			s.Queue[string(c)][string(job.Queued)] = st.QueuedLen(c)
		}
		// Running jobs by class, from the store's memory (no record read).
		for _, j := range st.Running() {
			if s.Queue[string(j.Class)] == nil {
				s.Queue[string(j.Class)] = map[string]int{string(job.Queued): 0, string(job.Running): 0}
			}
			s.Queue[string(j.Class)][string(job.Running)]++
		}
	}
	inVRAM := map[string][]string{}
	if d.src.Pool != nil {
		for _, w := range d.src.Pool.Infos() {
			for m := range w.Resident {
				inVRAM[m] = append(inVRAM[m], w.ID)
			}
		}
	}
	if d.src.Catalog != nil {
		if models, err := d.src.Catalog.List(); err == nil {
			for _, m := range models {
				r := Residency{Model: m.ID, Bytes: m.Bytes, VRAM: inVRAM[m.ID]}
				if r.VRAM == nil {
					r.VRAM = []string{}
				}
				sort.Strings(r.VRAM)
				if d.src.Tiers != nil {
					r.RAM, r.Disk = d.src.Tiers.Holds(m.ID)
				}
				s.Residency = append(s.Residency, r)
			}
		}
	}
	d.mu.Lock()
	s.Events = append([]Event{}, d.events...)
	d.mu.Unlock()
	return s
}

func (d *Dashboard) serveSnapshot(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, d.snapshot())
}

// serveHistory is GET /v1/dashboard/vram: the samples so far and, last,
// one taken now, so that the chart ends at the present even between
// samples (and shows something before Run's first tick).
func (d *Dashboard) serveHistory(w http.ResponseWriter, _ *http.Request) {
	d.mu.Lock()
	samples := append(make([]Sample, 0, len(d.history)+1), d.history...)
	d.mu.Unlock()
	samples = append(samples, Sample{Time: d.src.Clock.Now().UTC(), Devices: d.ledger()})
	httpjson.Write(w, http.StatusOK, map[string]any{"interval_s": sampleEvery.Seconds(), "samples": samples})
}
