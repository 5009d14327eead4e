package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

// socketpair returns both ends of a real Unix SOCK_STREAM socketpair.
func socketpair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("socketpair-%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// testHandler is a scriptable Handler.
type testHandler struct {
	runStarted chan uint64 // receives the attempt of each run as it starts
	runs       sync.Map    // job id → struct{}
}

var _ Handler = (*testHandler)(nil)

func (h *testHandler) Hello(ctx context.Context, req HelloRequest) (HelloReply, error) {
	return HelloReply{Name: "test", Version: "1", Capabilities: []string{"cancel"}}, nil
}

func (h *testHandler) Load(ctx context.Context, req LoadRequest) (LoadReply, error) {
	switch req.Model {
	case "panic":
		panic("boom")
	case "oom":
		return LoadReply{}, Errorf(ErrCodeOutOfMemory, "no room for %s", req.Model)
	case "plain":
		return LoadReply{}, errors.New("disk on fire")
	}
	return LoadReply{Model: req.Model, VRAMBytes: req.Bytes}, nil
}

func (h *testHandler) Unload(ctx context.Context, req UnloadRequest) (UnloadReply, error) {
	return UnloadReply{Model: req.Model}, nil
}

// Run: job "block" waits for cancellation; "panic" panics; others report
// Attempt progress steps and finish.
func (h *testHandler) Run(ctx context.Context, req RunRequest, progress func(Progress)) (RunResult, error) {
	if h.runStarted != nil {
		h.runStarted <- uint64(req.Attempt)
	}
	switch req.JobID {
	case "block":
		<-ctx.Done()
		return RunResult{}, ctx.Err()
	case "panic":
		panic("run exploded")
	}
	for i := 1; i <= req.Attempt; i++ {
		progress(Progress{JobID: req.JobID, Value: i, Max: req.Attempt})
	}
	return RunResult{JobID: req.JobID, RunNanos: int64(req.Attempt)}, nil
}

func (h *testHandler) Stats(ctx context.Context) (StatsReply, error) {
	return StatsReply{Running: 1}, nil
}

// client is a minimal kernel side for tests of Serve.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	mu   sync.Mutex
}

func (c *client) send(id uint64, typ string, body any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := WriteFrame(c.conn, Header{ID: id, Type: typ}, body); err != nil {
		c.t.Errorf("send %s: %v", typ, err)
	}
}

func (c *client) recv() (Header, msgpack.RawMessage) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, raw, err := ReadFrame(c.r)
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return h, raw
}

func (c *client) decode(raw msgpack.RawMessage, v any) {
	c.t.Helper()
	if err := DecodeBody(raw, v); err != nil {
		c.t.Fatal(err)
	}
}

// startServe runs Serve on one end of a socketpair and says hello on the
// other. The returned channel yields Serve's result.
func startServe(t *testing.T, h Handler) (*client, <-chan error) {
	t.Helper()
	a, b := socketpair(t)
	errc := make(chan error, 1)
	go func() { errc <- Serve(context.Background(), b, h) }()
	c := &client{t: t, conn: a, r: bufio.NewReader(a)}
	c.send(1, TypeHello, HelloRequest{Protocol: ProtocolVersion, WorkerID: "w"})
	hdr, raw := c.recv()
	var hr HelloReply
	c.decode(raw, &hr)
	if hdr != (Header{ID: 1, Type: TypeOK}) || hr.Protocol != ProtocolVersion || hr.Name != "test" {
		t.Fatalf("hello reply %+v %+v", hdr, hr)
	}
	return c, errc
}

// waitServe waits for Serve to return.
func waitServe(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func TestServeHelloRejects(t *testing.T) {
	for _, tc := range []struct {
		name     string
		typ      string
		body     any
		wantCode string
	}{
		{"protocol mismatch", TypeHello, HelloRequest{Protocol: 99}, ErrCodeUnsupported},
		{"not hello first", TypePing, PingRequest{}, ErrCodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketpair(t)
			errc := make(chan error, 1)
			go func() { errc <- Serve(context.Background(), b, &testHandler{}) }()
			c := &client{t: t, conn: a, r: bufio.NewReader(a)}
			c.send(1, tc.typ, tc.body)
			hdr, raw := c.recv()
			var er ErrorReply
			c.decode(raw, &er)
			if hdr.Type != TypeError || er.Code != tc.wantCode {
				t.Errorf("reply %+v %+v, want error %s", hdr, er, tc.wantCode)
			}
			if err := waitServe(t, errc); err == nil {
				t.Error("Serve returned nil, want an error")
			}
		})
	}
}

func TestServeRequests(t *testing.T) {
	c, errc := startServe(t, &testHandler{})
	for _, tc := range []struct {
		name     string
		typ      string
		body     any
		wantType string
		wantCode string
		check    func(raw msgpack.RawMessage)
	}{
		{name: "ping", typ: TypePing, body: PingRequest{Nonce: 77}, wantType: TypeOK, check: func(raw msgpack.RawMessage) {
			var pr PingReply
			c.decode(raw, &pr)
			if pr.Nonce != 77 {
				t.Errorf("nonce %d", pr.Nonce)
			}
		}},
		{name: "load", typ: TypeLoad, body: LoadRequest{Model: "m", Bytes: 5}, wantType: TypeOK, check: func(raw msgpack.RawMessage) {
			var lr LoadReply
			c.decode(raw, &lr)
			if lr.Model != "m" || lr.VRAMBytes != 5 {
				t.Errorf("load reply %+v", lr)
			}
		}},
		{name: "load coded error", typ: TypeLoad, body: LoadRequest{Model: "oom"}, wantType: TypeError, wantCode: ErrCodeOutOfMemory},
		{name: "load plain error", typ: TypeLoad, body: LoadRequest{Model: "plain"}, wantType: TypeError, wantCode: ErrCodeInternal},
		{name: "load panic", typ: TypeLoad, body: LoadRequest{Model: "panic"}, wantType: TypeError, wantCode: ErrCodeInternal, check: func(raw msgpack.RawMessage) {
			var er ErrorReply
			c.decode(raw, &er)
			if !strings.Contains(er.Message, "boom") {
				t.Errorf("panic message %q", er.Message)
			}
		}},
		{name: "run panic", typ: TypeRun, body: RunRequest{JobID: "panic"}, wantType: TypeError, wantCode: ErrCodeInternal},
		{name: "unload", typ: TypeUnload, body: UnloadRequest{Model: "m"}, wantType: TypeOK},
		{name: "stats", typ: TypeStats, body: nil, wantType: TypeOK},
		{name: "cancel unknown", typ: TypeCancel, body: CancelRequest{Target: 12345}, wantType: TypeOK},
		{name: "unknown type", typ: "teleport", body: nil, wantType: TypeError, wantCode: ErrCodeUnsupported},
		{name: "second hello", typ: TypeHello, body: HelloRequest{Protocol: 1}, wantType: TypeError, wantCode: ErrCodeBadRequest},
		{name: "bad body", typ: TypeLoad, body: map[string]any{"bytes": "many"}, wantType: TypeError, wantCode: ErrCodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.send(10, tc.typ, tc.body)
			hdr, raw := c.recv()
			if hdr.ID != 10 || hdr.Type != tc.wantType {
				t.Fatalf("reply header %+v, want id 10 type %s", hdr, tc.wantType)
			}
			if tc.wantCode != "" {
				var er ErrorReply
				c.decode(raw, &er)
				if er.Code != tc.wantCode {
					t.Errorf("error code %q (%s), want %q", er.Code, er.Message, tc.wantCode)
				}
			}
			if tc.check != nil {
				tc.check(raw)
			}
		})
	}
	c.conn.Close()
	if err := waitServe(t, errc); err != nil {
		t.Errorf("Serve after peer close = %v, want nil", err)
	}
}

// TestServePipelined sends many runs and pings at once and checks that every
// request gets exactly one terminal frame, with all progress before it.
func TestServePipelined(t *testing.T) {
	c, errc := startServe(t, &testHandler{})
	const n = 200
	go func() {
		for i := uint64(2); i < 2+n; i++ {
			if i%2 == 0 {
				c.send(i, TypeRun, RunRequest{JobID: fmt.Sprint(i), Attempt: int(i % 7)})
			} else {
				c.send(i, TypePing, PingRequest{Nonce: i})
			}
		}
	}()
	progress := map[uint64]int{}
	done := map[uint64]bool{}
	for len(done) < n {
		hdr, raw := c.recv()
		if done[hdr.ID] {
			t.Fatalf("frame %+v after the terminal frame of %d", hdr, hdr.ID)
		}
		switch hdr.Type {
		case TypeProgress:
			progress[hdr.ID]++
		case TypeResult:
			var rr RunResult
			c.decode(raw, &rr)
			if rr.JobID != fmt.Sprint(hdr.ID) || progress[hdr.ID] != int(hdr.ID%7) {
				t.Errorf("run %d: result %+v after %d progress frames", hdr.ID, rr, progress[hdr.ID])
			}
			done[hdr.ID] = true
		case TypeOK:
			var pr PingReply
			c.decode(raw, &pr)
			if pr.Nonce != hdr.ID {
				t.Errorf("ping %d echoed %d", hdr.ID, pr.Nonce)
			}
			done[hdr.ID] = true
		default:
			t.Fatalf("unexpected frame %+v", hdr)
		}
	}
	c.conn.Close()
	if err := waitServe(t, errc); err != nil {
		t.Error(err)
	}
}

func TestServeCancel(t *testing.T) {
	h := &testHandler{runStarted: make(chan uint64, 1)}
	c, errc := startServe(t, h)
	c.send(5, TypeRun, RunRequest{JobID: "block"})
	<-h.runStarted
	// The run is in flight: a ping is still answered.
	c.send(6, TypePing, PingRequest{Nonce: 6})
	if hdr, _ := c.recv(); hdr != (Header{ID: 6, Type: TypeOK}) {
		t.Fatalf("ping reply %+v", hdr)
	}
	c.send(7, TypeCancel, CancelRequest{Target: 5})
	got := map[uint64]Header{}
	for range 2 {
		hdr, raw := c.recv()
		got[hdr.ID] = hdr
		if hdr.ID == 5 {
			var er ErrorReply
			c.decode(raw, &er)
			if hdr.Type != TypeError || er.Code != ErrCodeCancelled {
				t.Errorf("cancelled run ended with %+v %+v", hdr, er)
			}
		}
	}
	if got[7].Type != TypeOK {
		t.Errorf("cancel reply %+v", got[7])
	}
	c.conn.Close()
	if err := waitServe(t, errc); err != nil {
		t.Error(err)
	}
}

// TestServeReturnCancelsRuns checks that closing the connection cancels runs
// in flight and that Serve waits for them.
func TestServeReturnCancelsRuns(t *testing.T) {
	for _, viaCtx := range []bool{false, true} {
		t.Run(fmt.Sprint("ctx=", viaCtx), func(t *testing.T) {
			h := &testHandler{runStarted: make(chan uint64, 1)}
			a, b := socketpair(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- Serve(ctx, b, h) }()
			c := &client{t: t, conn: a, r: bufio.NewReader(a)}
			c.send(1, TypeHello, HelloRequest{Protocol: 1})
			c.recv()
			c.send(2, TypeRun, RunRequest{JobID: "block"})
			<-h.runStarted
			if viaCtx {
				cancel()
			} else {
				a.Close()
			}
			if err := waitServe(t, errc); err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
		})
	}
}

func TestServeMalformedStream(t *testing.T) {
	c, errc := startServe(t, &testHandler{})
	c.conn.Write([]byte{0xff, 0xff, 0xff, 0xff})
	if err := waitServe(t, errc); !errors.Is(err, ErrFrameSize) {
		t.Errorf("Serve = %v, want ErrFrameSize", err)
	}
}

func TestServeFileNotSocket(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	err = serveFile(context.Background(), r, &testHandler{})
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("serveFile(pipe) = %v, want a not-a-socket error", err)
	}
}

func TestServeFileSocket(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	kf := os.NewFile(uintptr(fds[0]), "kernel")
	kc, err := net.FileConn(kf)
	kf.Close()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- serveFile(context.Background(), os.NewFile(uintptr(fds[1]), "worker"), &testHandler{}) }()
	c := &client{t: t, conn: kc, r: bufio.NewReader(kc)}
	c.send(1, TypeHello, HelloRequest{Protocol: 1})
	if hdr, _ := c.recv(); hdr.Type != TypeOK {
		t.Errorf("hello reply %+v", hdr)
	}
	kc.Close()
	if err := waitServe(t, errc); err != nil {
		t.Error(err)
	}
}
