package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPolicyUnloadReturnsMemoryLive is issue 21's measurement on a running
// kiln: Go policy modules loaded and activated one after another (each
// other bytes, so each is compiled) grow the daemon's RSS by tens of MiB a
// version, and unloading them must give that back to the system — not
// just to Go's heap, where it sat for minutes (16 versions: 229 → 856 MiB,
// still 856 MiB after the unloads).
func TestPolicyUnloadReturnsMemoryLive(t *testing.T) {
	fifo := buildPolicy(t, "../policies/scheduling/fifo/wasm")
	k := startKiln(t, t.TempDir(), "devices.backend=sim")
	rss := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", k.cmd.Process.Pid))
		if err != nil {
			t.Skipf("cannot read kiln's RSS here: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
				return kb << 10
			}
		}
		t.Skip("no VmRSS in /proc: cannot measure kiln's RSS here")
		return 0
	}
	// The built-ins' WASM builds compile in the background after kiln is
	// ready, and a loaded version warms its instance pool after its load
	// answers: read the RSS once it has stopped moving.
	settled := func() int64 {
		prev := rss()
		for range 30 {
			time.Sleep(500 * time.Millisecond)
			now := rss()
			if d := now - prev; d < 4<<20 && d > -4<<20 {
				return now
			}
			prev = now
		}
		return prev
	}
	const versions = 8
	start := settled()
	for i := range versions {
		// A custom section of its own makes each module other bytes.
		tag := []byte(fmt.Sprintf("\x09kiln-testv%d", i))
		module := append(append(append([]byte(nil), fifo...), 0, byte(len(tag))), tag...)
		if code, data := k.admin("POST", "/v1/policies/scheduling?name=churn&activate=1&reason=rss", module); code != http.StatusCreated {
			t.Fatalf("load version %d: HTTP %d: %s", i+1, code, data)
		}
	}
	loaded := settled()
	if code, data := k.admin("POST", "/v1/policies/scheduling/activate", []byte(`{"name":"priority","reason":"rss"}`)); code != http.StatusOK {
		t.Fatalf("activate priority: HTTP %d: %s", code, data)
	}
	for v := 1; v <= versions; v++ {
		body, _ := json.Marshal(map[string]any{"name": "churn", "version": v, "reason": "rss"})
		if code, data := k.admin("POST", "/v1/policies/scheduling/unload", body); code != http.StatusOK {
			t.Fatalf("unload churn@%d: HTTP %d: %s", v, code, data)
		}
	}
	end := settled()
	t.Logf("kiln's RSS: %d MiB at start, %d MiB with %d versions loaded, %d MiB after unloading them", start>>20, loaded>>20, versions, end>>20)
	if loaded < start+versions*8<<20 {
		t.Fatalf("RSS grew only %d MiB over %d loads: the test measures nothing", (loaded-start)>>20, versions)
	}
	if end > start+(loaded-start)/4 {
		t.Errorf("RSS after the unloads %d MiB: kept %d of the %d MiB the loads took", end>>20, (end-start)>>20, (loaded-start)>>20)
	}
}
