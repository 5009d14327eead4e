package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/metrics"
	"github.com/kiln-gpu/kiln/internal/sim"
	"github.com/kiln-gpu/kiln/internal/tune"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// publicMutations are the /v1 routes that change something and take no
// admin token: a client's own jobs. Every other mutating /v1 route is an
// operator's and needs the token; a route added here should say why.
var publicMutations = []string{
	"POST /v1/jobs",        // submitting work is what clients do
	"DELETE /v1/jobs/{id}", // so is cancelling it
}

// fullServer is an API with every optional part present, so that every
// route is registered.
func fullServer(t *testing.T) *Server {
	t.Helper()
	clk := clock.Real()
	host := policyHost(t)
	ctl, err := experiment.New(experiment.Options{Host: host, Router: experiment.NewRouter(experiment.Policies{}), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	watches, err := experiment.NewWatcher(experiment.WatchOptions{Log: zerolog.Nop(), Rollback: func(experiment.Watch) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	rec := testRecorder(t, clk)
	auto, err := tune.NewAuto(tune.AutoOptions{Log: zerolog.Nop(), Sources: tune.Sources{
		Requests:    rec.Requests,
		Node:        func() (sim.Config, []sim.Model, error) { return sim.Config{}, nil, nil },
		Active:      func(abi.Kind) (string, map[string]float64, error) { return "", nil, nil },
		Experiments: ctl,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{PProf: true}, Deps{Log: zerolog.Nop(), AdminToken: "tok", Metrics: metrics.New(metrics.Sources{}),
		Policies: host, Experiments: ctl, Watches: watches, Shadow: testShadow(t, clk), Trace: rec, TuneStatus: func() any { return auto.Status() }})
}

// TestMutatingRoutesNeedTheToken walks the routes the API registered and
// sends every /v1 route that is not a GET, with no token and with a wrong
// one: each must refuse with 401, a WWW-Authenticate header and a JSON
// error, before it reads the request. A handler added without the admin
// guard fails here unless it is added to publicMutations.
func TestMutatingRoutesNeedTheToken(t *testing.T) {
	s := fullServer(t)
	h := s.Handler()
	wildcard := regexp.MustCompile(`\{[^}]*\}`)
	var checked []string
	for _, pattern := range s.routes {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			// A pattern without a method serves them all: check it as a POST.
			method, path = "", pattern
		}
		if method == http.MethodGet || method == http.MethodHead || !strings.HasPrefix(path, "/v1/") ||
			slices.Contains(publicMutations, pattern) {
			continue
		}
		if method == "" {
			method = http.MethodPost
		}
		target := wildcard.ReplaceAllStringFunc(path, func(w string) string {
			if w == "{$}" {
				return ""
			}
			return "x"
		})
		checked = append(checked, pattern)
		for _, auth := range []string{"", "Bearer wrong", "tok", "Basic dG9rOnRvaw=="} {
			t.Run(pattern+" "+auth, func(t *testing.T) {
				req := httptest.NewRequest(method, target, strings.NewReader(`{"name":"x"}`))
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				var body struct {
					Error struct{ Type, Message string }
				}
				if w.Code != http.StatusUnauthorized || json.Unmarshal(w.Body.Bytes(), &body) != nil ||
					body.Error.Type != "unauthorized" || body.Error.Message == "" {
					t.Fatalf("%s %s (Authorization %q) = %d %s; want 401 with a JSON error of type unauthorized",
						method, target, auth, w.Code, w.Body)
				}
				if w.Header().Get("Content-Type") != "application/json" || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer ") {
					t.Errorf("headers %v; want JSON and a Bearer challenge", w.Header())
				}
			})
		}
	}
	// The walk is not vacuous: the admin routes kiln has today are all in it.
	for _, want := range []string{"POST /v1/models/refresh", "POST /v1/policies/{kind}", "POST /v1/policies/{kind}/activate",
		"POST /v1/policies/{kind}/rollback", "POST /v1/policies/{kind}/unload", "PUT /v1/policies/{kind}/params",
		"POST /v1/experiments", "POST /v1/experiments/{id}/abort"} {
		if !slices.Contains(checked, want) {
			t.Errorf("%s was not checked (routes: %v)", want, s.routes)
		}
	}
	for _, p := range publicMutations {
		if !slices.Contains(s.routes, p) {
			t.Errorf("public route %s is not registered; drop it from publicMutations", p)
		}
	}
}

// TestRoutesAreListed: every route the server answers is one it listed,
// the dashboard's included, so the walk above sees them all.
func TestRoutesAreListed(t *testing.T) {
	s := fullServer(t)
	for _, probe := range []struct{ method, path string }{
		{"GET", "/"}, {"GET", "/v1/dashboard"}, {"GET", "/v1/dashboard/vram"}, {"GET", "/metrics"},
		{"GET", "/v1/policies"}, {"POST", "/v1/policies/eviction/rollback"}, {"GET", "/v1/experiments/watches"},
		{"GET", "/v1/experiments/trace"}, {"GET", "/v1/tune"}, {"GET", "/debug/pprof/"}, {"POST", "/v1/models/refresh"},
	} {
		_, pattern := s.mux.Handler(httptest.NewRequest(probe.method, probe.path, nil))
		if pattern == "" || !slices.Contains(s.routes, pattern) {
			t.Errorf("%s %s is served by %q, which the server did not list", probe.method, probe.path, pattern)
		}
	}
}
