package api

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/metrics"
)

// Requests are counted by the route that served them, never by their path
// (an id in the path would make a series per job), with the status sent;
// the dashboard's page and the 404s of no route are counted too.
func TestHTTPMetricsByRoute(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	clk := clock.Real()
	s := New(Config{}, Deps{Log: zerolog.Nop(), Metrics: m, AdminToken: "tok", Shadow: testShadow(t, clk), Trace: testRecorder(t, clk)})
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/experiments/shadow", 200},
		{"GET", "/v1/experiments/trace", 401},
		{"GET", "/", 200},
		{"GET", "/no/such/thing", 404},
		{"GET", "/no/such/other/thing", 404},
		{"DELETE", "/healthz", 405},
		{"GET", "/v1/dashboard/events", 200},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.path == "/v1/dashboard/events" {
			// A client that has gone: the stream answers and ends.
			ctx, cancel := context.WithCancel(req.Context())
			cancel()
			req = req.WithContext(ctx)
		}
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.want)
		}
	}
	want := `
# HELP kiln_http_requests_total HTTP requests answered, by route (the pattern that served it; "unmatched" for a 404 or 405 of no route), method and status code.
# TYPE kiln_http_requests_total counter
kiln_http_requests_total{code="200",method="GET",route="GET /v1/experiments/shadow"} 1
kiln_http_requests_total{code="401",method="GET",route="GET /v1/experiments/trace"} 1
kiln_http_requests_total{code="200",method="GET",route="GET /{$}"} 1
kiln_http_requests_total{code="404",method="GET",route="unmatched"} 2
kiln_http_requests_total{code="405",method="DELETE",route="unmatched"} 1
kiln_http_requests_total{code="200",method="GET",route="GET /v1/dashboard/events"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "kiln_http_requests_total"); err != nil {
		t.Error(err)
	}
	// The event stream is counted, not timed.
	if n, _ := testutil.GatherAndCount(m.Registry(), "kiln_http_request_duration_seconds"); n != 5 {
		t.Errorf("%d duration series, want 5 (one per route and method, the stream left out)", n)
	}
}
