package api

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/experiment"
)

// TestExperimentRoutes drives a real experiment controller through the
// API: the list and the watches are public, a start and an abort take the
// admin token, and each refusal has its status.
func TestExperimentRoutes(t *testing.T) {
	host := policyHost(t)
	ctl, err := experiment.New(experiment.Options{Host: host, Router: experiment.NewRouter(experiment.Policies{}), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	watches, err := experiment.NewWatcher(experiment.WatchOptions{Log: zerolog.Nop(), Rollback: func(experiment.Watch) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	h := New(Config{}, Deps{Log: zerolog.Nop(), Policies: host, Experiments: ctl, Watches: watches, AdminToken: "tok"}).Handler()
	const canary = `{"kind":"scheduling","policy":"edf","type":"canary","steps":[10,100]}`
	var started string
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		errType                         string
	}{
		{name: "empty list", method: "GET", path: "/v1/experiments", status: 200},
		{name: "watches", method: "GET", path: "/v1/experiments/watches", status: 200},
		{name: "start without token", method: "POST", path: "/v1/experiments", body: canary, status: 401, errType: "unauthorized"},
		{name: "start with an unknown field", method: "POST", path: "/v1/experiments", token: "tok", body: `{"kind":"scheduling","nope":1}`, status: 400, errType: "invalid_experiment"},
		{name: "start with an empty body", method: "POST", path: "/v1/experiments", token: "tok", status: 400, errType: "invalid_experiment"},
		{name: "start an invalid spec", method: "POST", path: "/v1/experiments", token: "tok", body: `{"kind":"scheduling","policy":"edf","type":"magic"}`, status: 400, errType: "invalid_experiment"},
		// A live node cannot attribute the jobs its routing sent elsewhere.
		{name: "start a routing experiment", method: "POST", path: "/v1/experiments", token: "tok", body: `{"kind":"routing","policy":"random","type":"canary","unit":"traffic"}`, status: 400, errType: "invalid_experiment"},
		{name: "start", method: "POST", path: "/v1/experiments", token: "tok", body: canary, status: 201},
		{name: "start while one runs", method: "POST", path: "/v1/experiments", token: "tok", body: canary, status: 409, errType: "experiment_running"},
		{name: "unknown id", method: "GET", path: "/v1/experiments/nope", status: 404, errType: "not_found"},
		{name: "abort without token", method: "POST", path: "/v1/experiments/{started}/abort", status: 401, errType: "unauthorized"},
		{name: "abort with a bad body", method: "POST", path: "/v1/experiments/{started}/abort", token: "tok", body: `{"why":1}`, status: 400, errType: "invalid_request"},
		{name: "abort", method: "POST", path: "/v1/experiments/{started}/abort", token: "tok", body: `{"reason":"test"}`, status: 200},
		{name: "abort again", method: "POST", path: "/v1/experiments/{started}/abort", token: "tok", status: 409, errType: "not_running"},
		{name: "the record", method: "GET", path: "/v1/experiments/{started}", status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out := call(t, h, tc.method, strings.ReplaceAll(tc.path, "{started}", started), tc.token, tc.body)
			if status != tc.status || errTypeOf(out) != tc.errType {
				t.Fatalf("%s %s = %d %v; want %d %q", tc.method, tc.path, status, out, tc.status, tc.errType)
			}
			if tc.name == "start" {
				started, _ = out["id"].(string)
			}
		})
	}
	_, out := call(t, h, "GET", "/v1/experiments", "", "")
	if list, _ := out["experiments"].([]any); len(list) != 1 {
		t.Errorf("list after one experiment: %v", out)
	}
	_, out = call(t, h, "GET", "/v1/experiments/"+started, "", "")
	if out["state"] == "running" || !strings.Contains(out["reason"].(string), "aborted by an operator: test") {
		t.Errorf("aborted record: %v", out)
	}
	if _, ok := out["spec"]; !ok {
		t.Errorf("record without its spec: %v", out)
	}
}
