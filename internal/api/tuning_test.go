package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/shadow"
	"github.com/kiln-gpu/kiln/internal/sim"
	"github.com/kiln-gpu/kiln/internal/tune"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// testShadow is a real shadow cache with one candidate, LRU, on one
// 4 GiB device.
func testShadow(t *testing.T, clk clock.Clock) *shadow.Shadow {
	t.Helper()
	sh, err := shadow.New([]shadow.Candidate{shadow.FromEvictor("lru", policy.Native().NewEvictor())},
		shadow.Topology{Devices: []shadow.Device{{VRAMBytes: 4 << 30}}},
		shadow.Sources{Model: func(string) (uint64, uint64, bool) { return 1 << 30, 1 << 30, true },
			Bandwidth: func() shadow.Bandwidths { return shadow.Bandwidths{} }}, clk)
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

// testRecorder is a real arrival recorder keeping its file in a temporary
// directory.
func testRecorder(t *testing.T, clk clock.Clock) *tune.Recorder {
	t.Helper()
	rec, err := tune.NewRecorder(filepath.Join(t.TempDir(), tune.TraceFile), 0, clk)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestTuningRoutes serves a real shadow cache, arrival recorder and tuner:
// the shadow report and the tuner's status are public, the recorded trace
// (the node's traffic) needs the admin token.
func TestTuningRoutes(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	clk := clock.NewFake(t0)
	sh := testShadow(t, clk)
	rec := testRecorder(t, clk)
	rec.Record(tune.Arrival{At: t0, Models: []string{"m1", "lora1"}, Class: job.Interactive, DeadlineMS: 5000})
	rec.Record(tune.Arrival{At: t0.Add(1500 * time.Millisecond), Models: []string{"m2"}, Class: job.Batch})
	host := policyHost(t)
	ctl, err := experiment.New(experiment.Options{Host: host, Router: experiment.NewRouter(experiment.Policies{}), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	auto, err := tune.NewAuto(tune.AutoOptions{Clock: clk, Log: zerolog.Nop(), Sources: tune.Sources{
		Requests:    rec.Requests,
		Node:        func() (sim.Config, []sim.Model, error) { return sim.Config{}, nil, nil },
		Active:      func(abi.Kind) (string, map[string]float64, error) { return "", nil, nil },
		Experiments: ctl,
	}})
	if err != nil {
		t.Fatal(err)
	}
	h := New(Config{}, Deps{Log: zerolog.Nop(), AdminToken: "tok", Shadow: sh, Trace: rec, TuneStatus: func() any { return auto.Status() }}).Handler()

	get := func(path, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	w := get("/v1/experiments/shadow", "")
	var rep shadow.Report
	if err := json.Unmarshal(w.Body.Bytes(), &rep); w.Code != 200 || err != nil || len(rep.Candidates) != 1 ||
		!strings.HasPrefix(w.Body.String(), "{\n  \"") || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("shadow report: %d %q %s (%v); want 200, indented JSON", w.Code, w.Header().Get("Content-Type"), w.Body, err)
	}

	for _, tc := range []struct {
		name, path, token string
		status            int
		body              string
	}{
		{name: "no token", path: "/v1/experiments/trace", status: 401},
		{name: "wrong token", path: "/v1/experiments/trace", token: "wrong", status: 401},
		{name: "every arrival", path: "/v1/experiments/trace", token: "tok", status: 200,
			body: "time_s,models,class,deadline_ms\n0.000,m1;lora1,interactive,5000\n1.500,m2,batch,0\n"},
		{name: "the last one", path: "/v1/experiments/trace?limit=1", token: "tok", status: 200,
			body: "time_s,models,class,deadline_ms\n0.000,m2,batch,0\n"},
		{name: "limit 0", path: "/v1/experiments/trace?limit=0", token: "tok", status: 400},
		{name: "limit x", path: "/v1/experiments/trace?limit=x", token: "tok", status: 400},
		{name: "limit -3", path: "/v1/experiments/trace?limit=-3", token: "tok", status: 400},
	} {
		t.Run("trace "+tc.name, func(t *testing.T) {
			w := get(tc.path, tc.token)
			if w.Code != tc.status || (tc.body != "" && w.Body.String() != tc.body) {
				t.Fatalf("%d\n%s\nwant %d\n%s", w.Code, w.Body, tc.status, tc.body)
			}
			switch w.Code {
			case 200:
				if w.Header().Get("Content-Type") != "text/csv; charset=utf-8" || w.Header().Get("X-Kiln-Arrivals") == "" {
					t.Errorf("headers %v", w.Header())
				}
			case 400:
				if !strings.Contains(w.Body.String(), `"invalid_limit"`) {
					t.Errorf("body %s, want invalid_limit", w.Body)
				}
			}
		})
	}

	w = get("/v1/tune", "")
	var st tune.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); w.Code != 200 || err != nil || st.Runs == nil {
		t.Errorf("GET /v1/tune: %d %s (%v)", w.Code, w.Body, err)
	}
	for _, path := range []string{"/v1/tune", "/v1/experiments/shadow", "/v1/experiments/trace"} {
		status, out := call(t, h, "POST", path, "tok", "")
		if status != http.StatusMethodNotAllowed || errTypeOf(out) != "method_not_allowed" {
			t.Errorf("POST %s = %d %v, want 405 method_not_allowed", path, status, out)
		}
	}
}

// TestRoutingShadowRouteOnASingleNode: GET /v1/cluster/shadow on a node
// that is not in a cluster is a 404 with a JSON error saying why, not an
// empty report.
func TestRoutingShadowRouteOnASingleNode(t *testing.T) {
	h := New(Config{}, Deps{Log: zerolog.Nop()}).Handler()
	code, body := call(t, h, "GET", "/v1/cluster/shadow", "", "")
	if code != http.StatusNotFound || errTypeOf(body) != "not_a_cluster" {
		t.Errorf("GET /v1/cluster/shadow on a single node: HTTP %d %v; want 404 not_a_cluster", code, body)
	}
}
