package tune

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/sim"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestRecorderRingAndPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), TraceFile)
	clk := clock.NewFake(t0)
	r, err := NewRecorder(path, 3, clk)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		// Recorded out of order on purpose: jobs are seen when they start.
		at := t0.Add(time.Duration(5-i) * time.Second)
		r.Record(Arrival{At: at, Models: []string{"checkpoints/m" + string(rune('0'+i)) + ".safetensors"}, Class: job.Interactive, DeadlineMS: 30000})
	}
	arr := r.Arrivals()
	// The ring keeps the last three recorded (m2, m3, m4), sorted by time.
	if len(arr) != 3 || arr[0].Models[0] != "checkpoints/m4.safetensors" || arr[2].Models[0] != "checkpoints/m2.safetensors" {
		t.Fatalf("ring kept %v", arr)
	}
	for i := 1; i < len(arr); i++ {
		if arr[i].At.Before(arr[i-1].At) {
			t.Errorf("arrivals out of order: %v", arr)
		}
	}
	if err := r.Save(); err != nil {
		t.Fatal(err)
	}
	again, err := NewRecorder(path, 10, clk)
	if err != nil {
		t.Fatal(err)
	}
	got := again.Arrivals()
	if len(got) != 3 || !got[2].At.Equal(arr[2].At) || got[1].Models[0] != arr[1].Models[0] || got[0].DeadlineMS != 30000 {
		t.Errorf("reloaded %v, want %v", got, arr)
	}
	// A damaged file is reported, and what could be read is kept.
	if err := os.WriteFile(path, []byte("time_s,models,class,deadline_ms\n1.5,a,batch,0\nnot,a,line,x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad, err := NewRecorder(path, 10, clk)
	if err == nil || bad == nil || bad.Len() != 1 {
		t.Errorf("damaged file: err %v, kept %d", err, bad.Len())
	}
}

func TestRecorderFeed(t *testing.T) {
	clk := clock.NewFake(t0)
	r, _ := NewRecorder(filepath.Join(t.TempDir(), TraceFile), 0, clk)
	jobs := map[string]*job.Job{
		"a": {ID: "a", CreatedAt: t0, Models: []string{"m1", "lora1"}, Class: job.Interactive, DeadlineMS: 5000},
		"b": {ID: "b", CreatedAt: t0.Add(1500 * time.Millisecond), Models: []string{"m2"}, Class: job.Batch},
	}
	ch := make(chan job.Event, 10)
	ch <- job.Event{Type: job.EventStarted, JobID: "a", Attempt: 1}
	ch <- job.Event{Type: job.EventProgress, JobID: "a", Attempt: 1}
	ch <- job.Event{Type: job.EventStarted, JobID: "a", Attempt: 2} // a retry is not a new arrival
	ch <- job.Event{Type: job.EventStarted, JobID: "gone", Attempt: 1}
	ch <- job.Event{Type: job.EventStarted, JobID: "b", Attempt: 1}
	close(ch)
	err := r.Feed(context.Background(), ch, func(id string) (*job.Job, error) {
		if j, ok := jobs[id]; ok {
			return j, nil
		}
		return nil, errors.New("not found")
	})
	if err != nil || r.Len() != 2 {
		t.Fatalf("feed: %v, %d arrivals", err, r.Len())
	}

	// The recorded arrivals are a trace the simulator reads (internal/api
	// serves them as GET /v1/experiments/trace).
	var buf strings.Builder
	if err := sim.WriteTrace(&buf, r.Requests(0)); err != nil {
		t.Fatal(err)
	}
	want := "time_s,models,class,deadline_ms\n0.000,m1;lora1,interactive,5000\n1.500,m2,batch,0\n"
	if buf.String() != want {
		t.Errorf("trace:\n%s\nwant\n%s", buf.String(), want)
	}
	tr, err := sim.ReadTrace(strings.NewReader(buf.String()), sim.TraceOptions{File: "t.csv",
		Models: []sim.Model{{ID: "m1", Bytes: 1}, {ID: "lora1", Bytes: 1}, {ID: "m2", Bytes: 1}}})
	if err != nil || len(tr.Requests) != 2 || tr.Requests[1].Time != 1500*time.Millisecond {
		t.Errorf("ReadTrace: %v %+v", err, tr)
	}
	if last := r.Requests(1); len(last) != 1 || last[0].Models[0] != "m2" {
		t.Errorf("Requests(1) = %+v, want the last arrival", last)
	}
}

// FuzzReadArrivals: the persisted file is read back at start; whatever it
// holds must give an error or arrivals, never a panic.
func FuzzReadArrivals(f *testing.F) {
	f.Add("time_s,models,class,deadline_ms\n1795685165.391,a;b,interactive,0\n")
	f.Add("# c\ntime_s,models,class,deadline_ms\nNaN,a,batch,1\n")
	f.Add("time_s,models,class,deadline_ms\n1e300,a,batch,-5\n")
	f.Fuzz(func(t *testing.T, in string) {
		arr, _ := readArrivals(strings.NewReader(in))
		for _, a := range arr {
			if len(a.Models) == 0 {
				t.Errorf("arrival without models from %q", in)
			}
		}
	})
}
