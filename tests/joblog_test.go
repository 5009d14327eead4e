package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestKilnKilledBetweenLogAndIndex kills kiln (SIGKILL) while every job it
// acknowledged is in its job log only: KILNTEST_HOLD_JOB_INDEX=1 keeps the
// store from copying the log into its bbolt index. The test checks that the
// index really had none of the jobs when kiln died, then restarts kiln
// normally and requires every acknowledged job back, and run to completion.
func TestKilnKilledBetweenLogAndIndex(t *testing.T) {
	dataDir := t.TempDir()
	t.Setenv("KILNTEST_HOLD_JOB_INDEX", "1")
	k := startKiln(t, dataDir, "cost.time_scale=0.02")
	var ids []string
	for i := range 30 {
		ids = append(ids, k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, i), []string{"batch", "interactive"}[i%2]))
	}
	// Reads see the log while the index is held: every job is listed.
	for _, id := range ids {
		if j := k.job(id); j.ID != id {
			t.Fatalf("job %s read back as %+v", id, j)
		}
	}
	k.kill9()

	entries, _ := os.ReadDir(dataDir)
	var segments []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "queue.db.wal.") {
			segments = append(segments, e.Name())
		}
	}
	if len(segments) == 0 {
		t.Fatalf("no job log segments in %s after the kill", dataDir)
	}
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
	if indexed != 0 {
		t.Fatalf("%d of %d acknowledged jobs were in bbolt at the kill; the test must kill between log and index", indexed, len(ids))
	}

	t.Setenv("KILNTEST_HOLD_JOB_INDEX", "0")
	k.start(freePort(t))
	waitFor(t, 3*time.Minute, "every acknowledged job to complete after the restart", func() bool {
		for _, id := range ids {
			if k.job(id).State != "done" {
				return false
			}
		}
		return true
	})
	entries, _ = os.ReadDir(dataDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "queue.db.wal.") {
			// The replayed log is gone; the running kiln has a new one.
			for _, old := range segments {
				if e.Name() == old {
					t.Errorf("replayed segment %s still present", old)
				}
			}
		}
	}
}
