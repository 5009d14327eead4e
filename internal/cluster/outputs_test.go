package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/cluster/clusterconfig"
	"github.com/kiln-gpu/kiln/internal/job"
)

// testJetStream runs a JetStream server in the test's process (the
// nats-server module kiln nats runs) and returns a Cluster with the
// registry and the outputs' object store on it, R1: enough for the parts
// of a node that read and write them, without its loops.
func testJetStream(t *testing.T) *Cluster {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := clusterconfig.Config{NodeID: "here", Replicas: 1}.WithDefaults()
	c := &Cluster{cfg: cfg, nc: nc, log: zerolog.Nop(), held: map[string]*held{}, written: map[string]chan struct{}{},
		recent: map[string]*Record{}, view: map[string]*Record{}, directs: map[string]*Record{}}
	c.js, err = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(opTimeout))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if c.jobs, err = c.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: jobsBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	if c.outputs, err = c.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: outputsBucket}); err != nil {
		t.Fatal(err)
	}
	return c
}

// putFile publishes data as an object with putObject and waits for it.
func putFile(t *testing.T, c *Cluster, name string, data []byte) {
	t.Helper()
	acks, err := c.putObject(name, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := awaitAcks(ctx, acks); err != nil {
		t.Fatal(err)
	}
}

// TestPutObjectIsReadByObjectStoreGet: the outputs' copy lays objects out
// as nats.go's ObjectStore.Put does, so that Get (which checks the size and
// the SHA-256 digest) reads them back: several chunks, one, none, and a
// name written twice (the second wins).
func TestPutObjectIsReadByObjectStoreGet(t *testing.T) {
	c := testJetStream(t)
	ctx := context.Background()
	for _, size := range []int{3*objectChunk + 12345, 1000, 0, objectChunk} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		name := "output/job1/a.png"
		putFile(t, c, name, data)
		obj, err := c.outputs.Get(ctx, name)
		if err != nil {
			t.Fatalf("%d bytes: get: %v", size, err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil {
			t.Fatalf("%d bytes: read: %v", size, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back %d bytes, not the same", size, len(got))
		}
	}
}

// TestOpenOutputWaitsForTheCopy: a /view on a node that did not run a job
// whose record says done finds its output even when it asks before the
// copy is there (it waits for it); a file no finished job lists is not
// found at once; a listed file that never comes is unavailable, not
// missing; and a file of a job whose node is gone (no heartbeat) is
// unavailable at once, not after copyWait.
func TestOpenOutputWaitsForTheCopy(t *testing.T) {
	c := testJetStream(t)
	ctx := context.Background()
	c.viewMu.Lock()
	if c.nodeView == nil {
		c.nodeView = map[string]seenNode{}
	}
	c.nodeView["there"] = seenNode{info: NodeInfo{ID: "there", Healthy: true}, arrived: time.Now()}
	c.viewMu.Unlock()
	rec := Record{Job: job.Job{ID: "job7", Class: job.Interactive, State: job.Done,
		Outputs: []job.Output{{Filename: "a.png", Subfolder: "job7/sub", Type: "output"}, {Filename: "b.png", Subfolder: "job7/sub", Type: "output"}}},
		Node: "there"}
	data, _ := json.Marshal(rec)
	if _, err := c.jobs.Create(ctx, key(rec.ID), data); err != nil {
		t.Fatal(err)
	}
	want := []byte("the bytes of a.png")
	go func() {
		time.Sleep(200 * time.Millisecond)
		acks, err := c.putObject(outputName("output", "job7/sub", "a.png"), bytes.NewReader(want))
		if err == nil {
			_ = awaitAcks(ctx, acks)
		}
	}()
	start := time.Now()
	rc, err := c.OpenOutput(ctx, "output", "job7/sub", "a.png")
	if err != nil {
		t.Fatalf("open an output whose copy comes 200 ms later: %v", err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("answered after %s, before the copy was there", waited)
	}

	start = time.Now()
	if _, err := c.OpenOutput(ctx, "output", "job7/sub", "c.png"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file the job does not list: %v, want not found", err)
	}
	if _, err := c.OpenOutput(ctx, "output", "nojob/sub", "a.png"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file of no job: %v, want not found", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("not found took %s; want at once", waited)
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := c.OpenOutput(short, "output", "job7/sub", "b.png"); err == nil || errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a listed file never copied: %v, want unavailable", err)
	}

	gone := Record{Job: job.Job{ID: "job8", State: job.Done, Outputs: []job.Output{{Filename: "a.png", Subfolder: "job8", Type: "output"}}}, Node: "gone"}
	data, _ = json.Marshal(gone)
	if _, err := c.jobs.Create(ctx, key(gone.ID), data); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if _, err := c.OpenOutput(ctx, "output", "job8", "a.png"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not in the cluster") {
		t.Fatalf("an output of a job whose node is gone: %v, want unavailable, saying why", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("an output of a gone node's job took %s to refuse; want at once", waited)
	}
}

// TestWorkMessageRoundTrip: the work message's body carries the id, the
// submit's token and a rescue's revision, and a body of an older node (the
// id alone) reads as no token and no revision.
func TestWorkMessageRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id, token string
		rev       uint64
	}{{"abc", "", 0}, {"abc", "0011", 0}, {"a.b:c-d", "ff", 42}} {
		id, token, rev := parseWorkMessage(workMessage(tc.id, tc.token, tc.rev))
		if id != tc.id || token != tc.token || rev != tc.rev {
			t.Fatalf("%+v read back as %q %q %d", tc, id, token, rev)
		}
	}
}
