package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T, d *Dashboard) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	d.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestRoutes(t *testing.T) {
	srv := serve(t, New(Sources{Version: "v9.9.9"}))
	for _, tc := range []struct {
		path, wantType, wantBody string
		wantStatus               int
	}{
		{"/", "text/html", "/dashboard/app.js", 200},
		{"/dashboard/app.js", "text/javascript", "EventSource", 200},
		{"/dashboard/app.css", "text/css", "--accent", 200},
		{"/dashboard/", "application/json", "not_found", 404},
		{"/dashboard/index.html", "application/json", "not_found", 404},
		{"/dashboard/nope.js", "application/json", "not_found", 404},
		{"/v1/dashboard", "application/json", `"version":"v9.9.9"`, 200},
		{"/v1/dashboard/vram", "application/json", `"samples"`, 200},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := get(t, srv.URL+tc.path)
			if resp.StatusCode != tc.wantStatus || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.wantType) || !strings.Contains(body, tc.wantBody) {
				t.Errorf("GET %s: %d %s, body %.200q; want %d %s containing %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.wantStatus, tc.wantType, tc.wantBody)
			}
		})
	}
	resp, _ := get(t, srv.URL+"/")
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("the page has no content security policy: %q", csp)
	}
	// GET / is the page alone: other paths are not the dashboard's.
	if resp, _ := get(t, srv.URL+"/elsewhere"); resp.StatusCode != 404 {
		t.Errorf("GET /elsewhere: %d, want 404", resp.StatusCode)
	}
}

// Without a store, devices or tiers, the snapshot is still complete JSON:
// both classes with zero counts and empty lists, never nulls the page
// would have to guard against.
func TestSnapshotEmpty(t *testing.T) {
	srv := serve(t, New(Sources{}))
	_, body := get(t, srv.URL+"/v1/dashboard")
	var s map[string]any
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"queue", "counts", "ledger", "residency", "events"} {
		if s[k] == nil {
			t.Errorf("%s is null in %s", k, body)
		}
	}
	q := s["queue"].(map[string]any)
	if q["interactive"] == nil || q["batch"] == nil {
		t.Errorf("queue lacks a class: %v", q)
	}
}

// Events reach an open stream as Server-Sent Events, are kept for the
// snapshot (progress frames only streamed), and the stream ends when Run
// does, so that kiln's shutdown does not wait on an open dashboard.
func TestEventStream(t *testing.T) {
	d := New(Sources{})
	srv := serve(t, d)
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { d.Run(ctx); close(ran) }()

	resp, err := http.Get(srv.URL + "/v1/dashboard/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// The stream is open once its first comment arrives.
	waitLine := func(prefix string) string {
		deadline := time.After(5 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stream ended waiting for %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-deadline:
				t.Fatalf("no %q line in 5 s", prefix)
			}
		}
	}
	waitLine(": kiln dashboard events")
	now := time.Now()
	d.record(Event{Time: now, Type: "progress", Job: "j1", Value: 3, Max: 20})
	d.record(Event{Time: now, Type: "finished", Job: "j1", State: "done"})
	var e Event
	if err := json.Unmarshal([]byte(strings.TrimPrefix(waitLine("data: "), "data: ")), &e); err != nil || e.Type != "progress" || e.Value != 3 {
		t.Errorf("first event %+v %v", e, err)
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(waitLine("data: "), "data: ")), &e); err != nil || e.Type != "finished" || e.State != "done" {
		t.Errorf("second event %+v %v", e, err)
	}
	if snap := d.snapshot(); len(snap.Events) != 1 || snap.Events[0].Type != "finished" {
		t.Errorf("kept events %+v, want the finished one alone", snap.Events)
	}

	stop()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the stream stayed open after Run ended")
		}
	}
}

// The recent events are bounded whatever the traffic.
func TestEventsBounded(t *testing.T) {
	d := New(Sources{})
	for i := 0; i < 3*eventsKept; i++ {
		d.record(Event{Type: "started", Job: "j"})
	}
	if n := len(d.snapshot().Events); n != eventsKept {
		t.Errorf("%d events kept, want %d", n, eventsKept)
	}
	for i := 0; i < historyLen+10; i++ {
		d.sample()
	}
	if len(d.history) != historyLen {
		t.Errorf("%d samples kept, want %d", len(d.history), historyLen)
	}
}
