package worker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// connPair returns the two ends of a real Unix socketpair.
func connPair(t testing.TB) (kernel, worker net.Conn) {
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

// connHandler is a tiny worker for Conn tests. Run jobs: "block" waits for
// cancellation, "stuck" ignores it until release is closed, "fail" returns a
// coded error; others send Attempt progress frames and succeed.
type connHandler struct {
	started chan string
	release chan struct{}
}

var _ wire.Handler = (*connHandler)(nil)

func (h *connHandler) Hello(ctx context.Context, req wire.HelloRequest) (wire.HelloReply, error) {
	return wire.HelloReply{Name: "conn-test", PID: 1}, nil
}

func (h *connHandler) Load(ctx context.Context, req wire.LoadRequest) (wire.LoadReply, error) {
	if req.Model == "huge" {
		return wire.LoadReply{}, wire.Errorf(wire.ErrCodeOutOfMemory, "%s does not fit", req.Model)
	}
	return wire.LoadReply{Model: req.Model, VRAMBytes: req.Bytes}, nil
}

func (h *connHandler) Unload(ctx context.Context, req wire.UnloadRequest) (wire.UnloadReply, error) {
	return wire.UnloadReply{Model: req.Model}, nil
}

func (h *connHandler) Run(ctx context.Context, req wire.RunRequest, progress func(wire.Progress)) (wire.RunResult, error) {
	if h.started != nil {
		h.started <- req.JobID
	}
	switch req.JobID {
	case "block":
		<-ctx.Done()
		return wire.RunResult{}, ctx.Err()
	case "stuck":
		<-h.release
		return wire.RunResult{}, ctx.Err()
	case "fail":
		return wire.RunResult{}, wire.Errorf(wire.ErrCodeFailed, "bad graph")
	}
	for i := 1; i <= req.Attempt; i++ {
		progress(wire.Progress{JobID: req.JobID, Value: i, Max: req.Attempt})
	}
	return wire.RunResult{JobID: req.JobID, RunNanos: int64(req.Attempt)}, nil
}

func (h *connHandler) Stats(ctx context.Context) (wire.StatsReply, error) {
	return wire.StatsReply{JobsDone: 3}, nil
}

// startWorker serves h on one end of a socketpair and returns a Conn on the
// other, after hello. serveDone is closed when Serve returns.
func startWorker(t testing.TB, h wire.Handler) (c *Conn, workerEnd net.Conn, serveDone <-chan struct{}) {
	t.Helper()
	k, w := connPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = wire.Serve(context.Background(), w, h)
	}()
	c = NewConn(k, zerolog.Nop())
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	var hr wire.HelloReply
	if err := c.Call(context.Background(), wire.TypeHello, wire.HelloRequest{Protocol: wire.ProtocolVersion}, &hr); err != nil {
		t.Fatalf("hello: %v", err)
	}
	if hr.Name != "conn-test" || hr.Protocol != wire.ProtocolVersion {
		t.Fatalf("hello reply %+v", hr)
	}
	return c, w, done
}

// within fails the test if ch is not ready within d.
func within[T any](t *testing.T, d time.Duration, what string, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s: not done within %s", what, d)
		panic("unreachable")
	}
}

func TestConnCalls(t *testing.T) {
	c, _, _ := startWorker(t, &connHandler{})
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		typ      string
		req      any
		reply    any
		want     any
		wantCode string
	}{
		{"ping", wire.TypePing, wire.PingRequest{Nonce: 99}, &wire.PingReply{}, &wire.PingReply{Nonce: 99}, ""},
		{"load", wire.TypeLoad, wire.LoadRequest{Model: "m", Bytes: 10}, &wire.LoadReply{}, &wire.LoadReply{Model: "m", VRAMBytes: 10}, ""},
		{"load error", wire.TypeLoad, wire.LoadRequest{Model: "huge"}, &wire.LoadReply{}, nil, wire.ErrCodeOutOfMemory},
		{"unload nil reply", wire.TypeUnload, wire.UnloadRequest{Model: "m"}, nil, nil, ""},
		{"stats", wire.TypeStats, struct{}{}, &wire.StatsReply{}, &wire.StatsReply{JobsDone: 3}, ""},
		{"unknown type", "teleport", nil, nil, nil, wire.ErrCodeUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Call(ctx, tc.typ, tc.req, tc.reply)
			if tc.wantCode != "" {
				var we *wire.Error
				if !errors.As(err, &we) || we.Code != tc.wantCode {
					t.Fatalf("Call = %v, want *wire.Error %s", err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && fmt.Sprint(tc.reply) != fmt.Sprint(tc.want) {
				t.Errorf("reply %+v, want %+v", tc.reply, tc.want)
			}
		})
	}
}

func TestConnRun(t *testing.T) {
	c, _, _ := startWorker(t, &connHandler{})
	var got []int
	res, err := c.Run(context.Background(), wire.RunRequest{JobID: "j1", Attempt: 5}, func(p wire.Progress) { got = append(got, p.Value) })
	if err != nil {
		t.Fatal(err)
	}
	if res.JobID != "j1" || fmt.Sprint(got) != "[1 2 3 4 5]" {
		t.Errorf("result %+v, progress %v", res, got)
	}
	_, err = c.Run(context.Background(), wire.RunRequest{JobID: "fail"}, nil)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.ErrCodeFailed {
		t.Errorf("failing run = %v, want *wire.Error failed", err)
	}
}

func TestConnPipelined(t *testing.T) {
	c, _, _ := startWorker(t, &connHandler{})
	const callers, each = 32, 50
	var wg sync.WaitGroup
	errc := make(chan error, callers)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if g%2 == 0 {
					n := uint64(g*1000 + i)
					var pr wire.PingReply
					if err := c.Call(context.Background(), wire.TypePing, wire.PingRequest{Nonce: n}, &pr); err != nil || pr.Nonce != n {
						errc <- fmt.Errorf("ping %d: %v, nonce %d", n, err, pr.Nonce)
						return
					}
					continue
				}
				job := fmt.Sprintf("j%d-%d", g, i)
				steps := 0
				res, err := c.Run(context.Background(), wire.RunRequest{JobID: job, Attempt: i % 4}, func(wire.Progress) { steps++ })
				if err != nil || res.JobID != job || steps != i%4 {
					errc <- fmt.Errorf("run %s: %v, %+v, %d steps", job, err, res, steps)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestConnRunCancel(t *testing.T) {
	h := &connHandler{started: make(chan string, 1)}
	c, _, _ := startWorker(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, wire.RunRequest{JobID: "block"}, nil)
		errc <- err
	}()
	within(t, 5*time.Second, "run start", h.started)
	cancel()
	err := within(t, 5*time.Second, "cancelled run", errc)
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "did not stop") {
		t.Errorf("Run = %v, want a clean context.Canceled", err)
	}
	// The worker stays usable.
	if err := c.Call(context.Background(), wire.TypePing, wire.PingRequest{}, nil); err != nil {
		t.Errorf("ping after cancel: %v", err)
	}
}

func TestConnRunCancelGraceExpires(t *testing.T) {
	h := &connHandler{started: make(chan string, 1), release: make(chan struct{})}
	c, _, _ := startWorker(t, h)
	defer close(h.release)
	c.cancelGrace = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, wire.RunRequest{JobID: "stuck"}, nil)
		errc <- err
	}()
	within(t, 5*time.Second, "run start", h.started)
	cancel()
	err := within(t, 5*time.Second, "stuck run", errc)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "did not stop") {
		t.Errorf("Run = %v, want context.Canceled and a stuck-worker note", err)
	}
}

func TestConnCallContext(t *testing.T) {
	c, _, _ := startWorker(t, &connHandler{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Call(ctx, wire.TypePing, wire.PingRequest{}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Call(cancelled ctx) = %v", err)
	}
	if err := c.Call(context.Background(), wire.TypePing, wire.PingRequest{}, nil); err != nil {
		t.Errorf("ping after a dropped reply: %v", err)
	}
}

// TestConnWorkerDiesMidRun kills the worker's socket while a run and other
// calls are in flight: all of them must fail promptly with ErrConnClosed.
func TestConnWorkerDiesMidRun(t *testing.T) {
	h := &connHandler{started: make(chan string, 1), release: make(chan struct{})}
	c, workerEnd, serveDone := startWorker(t, h)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), wire.RunRequest{JobID: "stuck"}, nil)
		errc <- err
	}()
	within(t, 5*time.Second, "run start", h.started)
	workerEnd.Close() // the worker process died
	if err := within(t, 5*time.Second, "run after crash", errc); !errors.Is(err, ErrConnClosed) {
		t.Errorf("Run = %v, want ErrConnClosed", err)
	}
	within(t, 5*time.Second, "Done", c.Done())
	if err := c.Err(); !errors.Is(err, ErrConnClosed) {
		t.Errorf("Err() = %v, want ErrConnClosed", err)
	}
	if err := c.Call(context.Background(), wire.TypePing, wire.PingRequest{}, nil); !errors.Is(err, ErrConnClosed) {
		t.Errorf("Call after close = %v, want ErrConnClosed", err)
	}
	close(h.release)
	within(t, 5*time.Second, "Serve", serveDone)
}

func TestConnClose(t *testing.T) {
	h := &connHandler{started: make(chan string, 1)}
	c, _, _ := startWorker(t, h)
	if c.Err() != nil {
		t.Fatalf("Err() on an open conn = %v", c.Err())
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), wire.RunRequest{JobID: "block"}, nil)
		errc <- err
	}()
	within(t, 5*time.Second, "run start", h.started)
	c.Close()
	if err := within(t, 5*time.Second, "run after Close", errc); !errors.Is(err, ErrConnClosed) {
		t.Errorf("Run = %v, want ErrConnClosed", err)
	}
	if !errors.Is(c.Err(), ErrConnClosed) {
		t.Errorf("Err() = %v", c.Err())
	}
}

// TestConnMalformedFrame checks that a worker sending garbage is cut off.
func TestConnMalformedFrame(t *testing.T) {
	k, w := connPair(t)
	c := NewConn(k, zerolog.Nop())
	defer c.Close()
	errc := make(chan error, 1)
	go func() { errc <- c.Call(context.Background(), wire.TypePing, wire.PingRequest{}, nil) }()
	// Read the request, answer with a frame that has trailing bytes.
	if _, _, err := wire.ReadFrame(bufio.NewReader(w)); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte{0, 0, 0, 3, 0x80, 0x80, 0x80})
	if err := within(t, 5*time.Second, "call", errc); !errors.Is(err, ErrConnClosed) || !errors.Is(err, wire.ErrMalformedFrame) {
		t.Errorf("Call = %v, want ErrConnClosed wrapping ErrMalformedFrame", err)
	}
}

// TestConnCallAbandoned checks that a call whose context ends while the
// worker is busy returns at once and that the late reply is dropped.
func TestConnCallAbandoned(t *testing.T) {
	h := &connHandler{started: make(chan string, 1)}
	c, _, _ := startWorker(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Call(ctx, wire.TypeRun, wire.RunRequest{JobID: "block"}, nil) }()
	within(t, 5*time.Second, "run start", h.started)
	cancel()
	if err := within(t, 5*time.Second, "abandoned call", errc); !errors.Is(err, context.Canceled) {
		t.Errorf("Call = %v, want context.Canceled", err)
	}
	if err := c.Call(context.Background(), wire.TypePing, wire.PingRequest{}, nil); err != nil {
		t.Errorf("ping after an abandoned call: %v", err)
	}
}

// TestConnNoticesIdleClose checks that a worker closing its socket while no
// call is pending is noticed: the background reader takes the free read
// token after IdleProbe and sees the end.
func TestConnNoticesIdleClose(t *testing.T) {
	c, workerEnd, _ := startWorker(t, &connHandler{})
	if err := c.Call(context.Background(), wire.TypePing, wire.PingRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	workerEnd.Close()
	within(t, 10*IdleProbe, "Done after an idle close", c.Done())
	if !errors.Is(c.Err(), ErrConnClosed) {
		t.Errorf("Err() = %v, want ErrConnClosed", c.Err())
	}
}

// TestConnCallsAfterIdle checks that a call takes the read token over from
// the background reader, which holds it once the connection has been quiet
// for IdleProbe, again and again.
func TestConnCallsAfterIdle(t *testing.T) {
	c, _, _ := startWorker(t, &connHandler{})
	for i := range 3 {
		time.Sleep(3 * IdleProbe)
		var rep wire.PingReply
		if err := c.Call(context.Background(), wire.TypePing, wire.PingRequest{Nonce: uint64(i + 7)}, &rep); err != nil || rep.Nonce != uint64(i+7) {
			t.Fatalf("ping %d after idle: %+v, %v", i, rep, err)
		}
	}
}

// TestConnResumesAFrameAfterAnInterrupt cuts a caller's read off inside a
// reply frame (its context ends while the worker has written part of it):
// the next reader must carry on from the same byte, or every later frame on
// the connection would be garbage. Both a frame that fits the read buffer
// and one that does not are cut.
func TestConnResumesAFrameAfterAnInterrupt(t *testing.T) {
	for _, size := range []int{100, 200 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			k, w := connPair(t)
			c := NewConn(k, zerolog.Nop())
			defer c.Close()
			wr := bufio.NewReader(w)

			ctx, cancel := context.WithCancel(context.Background())
			first := make(chan error, 1)
			go func() { first <- c.Call(ctx, wire.TypePing, wire.PingRequest{}, nil) }()
			h1, _, err := wire.ReadFrame(wr)
			if err != nil {
				t.Fatal(err)
			}
			var reply bytes.Buffer
			pad := map[string]any{"pad": bytes.Repeat([]byte{'x'}, size)}
			if err := wire.WriteFrame(&reply, wire.Header{ID: h1.ID, Type: wire.TypeOK}, pad); err != nil {
				t.Fatal(err)
			}
			half := reply.Len() / 2
			if _, err := w.Write(reply.Bytes()[:half]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // the caller reads the first half
			cancel()
			if err := within(t, 5*time.Second, "cancelled call", first); !errors.Is(err, context.Canceled) {
				t.Fatalf("first call = %v, want context.Canceled", err)
			}

			second := make(chan error, 1)
			var rep wire.PingReply
			go func() {
				second <- c.Call(context.Background(), wire.TypePing, wire.PingRequest{Nonce: 42}, &rep)
			}()
			h2, _, err := wire.ReadFrame(wr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(reply.Bytes()[half:]); err != nil { // the rest of the dropped reply
				t.Fatal(err)
			}
			if err := wire.WriteFrame(w, wire.Header{ID: h2.ID, Type: wire.TypeOK}, wire.PingReply{Nonce: 42}); err != nil {
				t.Fatal(err)
			}
			if err := within(t, 5*time.Second, "second call", second); err != nil || rep.Nonce != 42 {
				t.Fatalf("second call = %+v, %v", rep, err)
			}
			if c.Err() != nil {
				t.Fatalf("connection closed: %v", c.Err())
			}
		})
	}
}
