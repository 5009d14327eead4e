package tests

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// TestPolicyStateSurvivesRestart loads a module through the admin API and
// activates it, activates a built-in of another kind, stops kiln and starts
// it again on the same data dir: the same policies are active, the module
// is the same bytes, and the history from before the restart is kept.
func TestPolicyStateSurvivesRestart(t *testing.T) {
	module := buildPolicy(t, "../policies/scheduling/fifo/wasm")
	dataDir := t.TempDir()
	k := startKiln(t, dataDir)
	call := func(k *kilnProc, method, path string, body []byte) (int, []byte) { return k.admin(method, path, body) }
	type kindInfo struct {
		Active   string
		Versions []struct {
			Name   string
			SHA256 string
			Source string
		}
		Changes []struct{ Action, To string }
	}
	kind := func(k *kilnProc, name string) kindInfo {
		_, data := call(k, "GET", "/v1/policies/"+name, nil)
		var ki kindInfo
		if err := json.Unmarshal(data, &ki); err != nil {
			t.Fatalf("policies: %v: %s", err, data)
		}
		return ki
	}

	if code, data := call(k, "POST", "/v1/policies/scheduling?name=mine&activate=1&reason=restart+test", module); code != http.StatusCreated {
		t.Fatalf("load module: HTTP %d: %s", code, data)
	}
	body, _ := json.Marshal(map[string]any{"name": "s3fifo", "reason": "restart test"})
	if code, data := call(k, "POST", "/v1/policies/eviction/activate", body); code != http.StatusOK {
		t.Fatalf("activate s3fifo: HTTP %d: %s", code, data)
	}
	sched, evict := kind(k, "scheduling"), kind(k, "eviction")
	if sched.Active != "mine@1" || evict.Active != "s3fifo@1" {
		t.Fatalf("before the restart: scheduling %s, eviction %s", sched.Active, evict.Active)
	}
	k.stop()

	k2 := startKiln(t, dataDir)
	waitFor(t, 60*time.Second, "the saved policies to be active again", func() bool {
		return kind(k2, "scheduling").Active == "mine@1" && kind(k2, "eviction").Active == "s3fifo@1"
	})
	after := kind(k2, "scheduling")
	var sum string
	for _, v := range sched.Versions {
		if v.Name == "mine" {
			sum = v.SHA256
		}
	}
	found := false
	for _, v := range after.Versions {
		found = found || v.Name == "mine" && v.SHA256 == sum && v.Source == "wasm"
	}
	if !found || sum == "" {
		t.Errorf("restored versions %+v, want mine with sum %s", after.Versions, sum)
	}
	if len(after.Changes) < len(sched.Changes)+1 || after.Changes[len(sched.Changes)-1].To != "mine@1" {
		t.Errorf("history after the restart %+v, want the %d changes before it first", after.Changes, len(sched.Changes))
	}
}
