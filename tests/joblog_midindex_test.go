package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestKilnKilledMidIndexUnderLoad kills kiln (SIGKILL) while clients are
// submitting and its job index has part of what it acknowledged: the
// test hook KILNTEST_HOLD_JOB_INDEX_AFTER lets the indexer copy the log
// into bbolt as usual until it has applied holdAfter records, then stops
// it before its next bbolt transaction — the state kiln is in when it dies
// between a log append and the index update that would carry it, with
// older batches already indexed (replay must skip those by their lsn and
// apply the rest). Unlike TestKilnKilledBetweenLogAndIndex (nothing
// indexed, one client at a time), eight clients are in flight at the kill.
//
// It checks that bbolt really held some and not all of the acknowledged
// jobs at the kill, then restarts kiln without the hook and requires every
// acknowledged job back with its workflow, and no more jobs than were
// acknowledged or in flight.
func TestKilnKilledMidIndexUnderLoad(t *testing.T) {
	const holdAfter = 100
	const clients = 8
	dataDir := t.TempDir()
	t.Setenv("KILNTEST_HOLD_JOB_INDEX_AFTER", "100")
	// Slow jobs: the workers take a few of them, which adds start records
	// to the log, and most stay queued.
	k := startKiln(t, dataDir, "cost.time_scale=1")
	if !strings.Contains(k.logTail(), "job store test hooks are on") {
		t.Errorf("kiln did not warn that a test hook is on; log:\n%s", k.logTail())
	}

	// One body per request, each with a seed of its own, made from a
	// template: the clients' goroutines must not call t.Fatal.
	const seedMark = 987654321
	template, _ := json.Marshal(map[string]any{
		"workflow": loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, seedMark),
		"class":    "batch",
	})
	if !bytes.Contains(template, []byte("987654321")) {
		t.Fatal("the workflow has no seed to vary")
	}
	var (
		mu    sync.Mutex
		acked []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := bytes.Replace(template, []byte("987654321"), []byte(strconv.Itoa(c*1000000+i)), 1)
				if i%2 == 1 {
					body = bytes.Replace(body, []byte(`"class":"batch"`), []byte(`"class":"interactive"`), 1)
				}
				resp, err := client.Post(k.base+"/v1/jobs", "application/json", bytes.NewReader(body))
				if err != nil {
					// kiln was killed with this request in flight: not
					// acknowledged, so it may or may not be there.
					return
				}
				data, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusAccepted {
					if err == nil {
						t.Errorf("submit: HTTP %d: %s", resp.StatusCode, data)
					}
					return
				}
				var acc struct{ ID string }
				if err := json.Unmarshal(data, &acc); err != nil || acc.ID == "" {
					t.Errorf("submit answer %s: %v", data, err)
					return
				}
				mu.Lock()
				acked = append(acked, acc.ID)
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitFor(t, 60*time.Second, "300 acknowledged jobs", func() bool { return count() >= holdAfter+200 })
	// The indexer runs every 100 ms: by now it has applied its first
	// holdAfter records and stopped. The clients keep submitting.
	time.Sleep(time.Second)
	k.kill9()
	close(stop)
	wg.Wait()
	ids := append([]string(nil), acked...)

	db, err := bolt.Open(filepath.Join(dataDir, "queue.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	indexed := 0
	_ = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("jobs")); b != nil {
			for _, id := range ids {
				if b.Get([]byte(id)) != nil {
					indexed++
				}
			}
		}
		return nil
	})
	_ = db.Close()
	t.Logf("%d jobs acknowledged, %d of them in bbolt at the kill", len(ids), indexed)
	if indexed == 0 || indexed == len(ids) {
		t.Fatalf("%d of %d acknowledged jobs were in bbolt at the kill; the test must kill with part of them indexed", indexed, len(ids))
	}
	entries, _ := os.ReadDir(dataDir)
	segments := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "queue.db.wal.") {
			segments++
		}
	}
	if segments == 0 {
		t.Fatalf("no job log segments in %s after the kill", dataDir)
	}

	t.Setenv("KILNTEST_HOLD_JOB_INDEX_AFTER", "")
	k.start(freePort(t))
	for _, id := range ids {
		code, data := k.do("GET", "/v1/jobs/"+id+"?workflow=1", nil)
		if code != http.StatusOK {
			t.Fatalf("acknowledged job %s after the restart: HTTP %d: %s", id, code, data)
		}
		var j struct {
			State    string          `json:"state"`
			Workflow json.RawMessage `json:"workflow"`
		}
		if err := json.Unmarshal(data, &j); err != nil {
			t.Fatal(err)
		}
		if j.State != "queued" && j.State != "running" && j.State != "done" {
			t.Errorf("job %s is %s after the restart", id, j.State)
		}
		if !bytes.Contains(j.Workflow, []byte("KSampler")) {
			t.Errorf("job %s came back without its workflow: %.200s", id, j.Workflow)
		}
	}
	code, data := k.do("GET", "/v1/jobs?limit=1", nil)
	if code != http.StatusOK {
		t.Fatalf("list jobs: HTTP %d: %s", code, data)
	}
	var list struct{ Counts map[string]int }
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range list.Counts {
		total += n
	}
	// Each client had at most one request in flight at the kill.
	if total < len(ids) || total > len(ids)+clients {
		t.Errorf("%d jobs after the restart (counts %v); want the %d acknowledged, plus at most %d in flight", total, list.Counts, len(ids), clients)
	}
}
