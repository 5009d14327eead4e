package cluster

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kiln-gpu/kiln/internal/cluster/clusterconfig"
)

// wsNode is a cluster member with nothing but its connection, which is all
// ForwardWS and OnForwardedWS use.
func wsNode(t *testing.T, url, id string) *Cluster {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &Cluster{cfg: clusterconfig.Config{NodeID: id}, nc: nc}
}

type wsGot struct {
	client, kind string
	frame        []byte
}

// TestForwardWSInParts sends WebSocket messages between two nodes through a
// real NATS server whose max payload (64 KiB) is far below a
// SaveImageWebsocket PNG's size: the large one arrives whole, in order with
// the small ones, and a node does not hear its own.
func TestForwardWSInParts(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, MaxPayload: 64 << 10, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	a, b := wsNode(t, srv.ClientURL(), "a"), wsNode(t, srv.ClientURL(), "b")
	var mu sync.Mutex
	var atA, atB []wsGot
	collect := func(into *[]wsGot) func(string, string, []byte) {
		return func(client, kind string, frame []byte) {
			mu.Lock()
			*into = append(*into, wsGot{client, kind, bytes.Clone(frame)})
			mu.Unlock()
		}
	}
	if err := a.OnForwardedWS(collect(&atA)); err != nil {
		t.Fatal(err)
	}
	if err := b.OnForwardedWS(collect(&atB)); err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	big := make([]byte, 300<<10+17) // five parts
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	sent := []wsGot{
		{"c1", "text", []byte(`{"type":"progress"}`)},
		{"c1", "image", big},
		{"c2", "text", []byte(`{"type":"executed"}`)},
		{"c1", "image", big[:64<<10]}, // just over one part's room
	}
	for _, m := range sent {
		a.ForwardWS(m.client, m.kind, m.frame)
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(atB)
		mu.Unlock()
		if n >= len(sent) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(atB) != len(sent) {
		t.Fatalf("b got %d messages, want %d", len(atB), len(sent))
	}
	for i, m := range sent {
		g := atB[i]
		if g.client != m.client || g.kind != m.kind || !bytes.Equal(g.frame, m.frame) {
			t.Errorf("message %d: got %s %s %d bytes, want %s %s %d bytes", i, g.client, g.kind, len(g.frame), m.client, m.kind, len(m.frame))
		}
	}
	if len(atA) != 0 {
		t.Errorf("a heard %d of its own messages", len(atA))
	}
}

// TestWSPartsDropsBrokenMessages: a message whose part is lost or out of
// order is dropped without holding up the next, and one whose parts stop
// coming is forgotten after wsPartsMaxAge.
func TestWSPartsDropsBrokenMessages(t *testing.T) {
	var w wsParts
	now := time.Unix(1000, 0)
	if got := w.add("m1", "0", "3", []byte("ab"), now); got != nil {
		t.Fatalf("first of three parts gave %q", got)
	}
	if got := w.add("m1", "2", "3", []byte("ef"), now); got != nil { // part 1 lost
		t.Fatalf("a message missing a part gave %q", got)
	}
	if got := w.add("m1", "1", "3", []byte("cd"), now); got != nil {
		t.Fatalf("a dropped message's late part gave %q", got)
	}
	if got := w.add("m2", "1", "2", []byte("cd"), now); got != nil {
		t.Fatalf("a message whose first part was lost gave %q", got)
	}
	w.add("m3", "0", "2", []byte("ab"), now)
	w.add("m4", "0", "2", []byte("xy"), now.Add(wsPartsMaxAge+time.Second)) // m3 too old now
	if _, ok := w.pending["m3"]; ok {
		t.Error("a message whose parts stopped coming is still kept")
	}
	if got := w.add("m4", "1", "2", []byte("z"), now.Add(wsPartsMaxAge+time.Second)); string(got) != "xyz" {
		t.Errorf("m4 = %q, want xyz", got)
	}
	if got := w.add("m5", "0", "1", []byte("one"), now); string(got) != "one" {
		t.Errorf("a one-part message = %q", got)
	}
	if len(w.pending) != 0 {
		t.Errorf("%d messages left pending", len(w.pending))
	}
}
