package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/vmihailenco/msgpack/v5"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// ErrConnClosed is wrapped by every error that a Conn returns because the
// connection is gone (the worker died, closed its socket, sent a malformed
// frame, or Close was called).
var ErrConnClosed = errors.New("worker connection closed")

// CancelGrace bounds how long Run waits, after its context ends, for the
// worker to deliver the cancelled run's terminal frame.
const CancelGrace = 5 * time.Second

// Conn is the kernel's end of one worker connection. It pipelines requests:
// Call and Run may be used from many goroutines at once; one read loop
// matches replies to requests by id.
type Conn struct {
	nc  net.Conn
	log zerolog.Logger

	nextID      atomic.Uint64
	cancelGrace time.Duration

	wmu sync.Mutex // serializes frame writes

	mu      sync.Mutex
	pending map[uint64]*call
	err     error // why the connection closed; set once, under mu

	done chan struct{} // closed when the read loop has exited
}

// call is one request waiting for its frames. The read loop appends frames
// and signals ready; the caller drains them. Both hold Conn.mu.
type call struct {
	ready  chan struct{} // capacity 1: "frames has something"
	frames []frame
}

// frame is one frame received for a call.
type frame struct {
	typ string
	raw msgpack.RawMessage
}

var callPool = sync.Pool{New: func() any { return &call{ready: make(chan struct{}, 1)} }}

// NewConn wraps c, the kernel's end of a worker socket, and starts its read
// loop. The Conn owns c from then on.
func NewConn(c net.Conn, log zerolog.Logger) *Conn {
	conn := &Conn{
		nc:          c,
		log:         log,
		cancelGrace: CancelGrace,
		pending:     make(map[uint64]*call),
		done:        make(chan struct{}),
	}
	go conn.readLoop()
	return conn
}

// Done returns a channel that is closed when the connection is gone.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection closed, wrapping ErrConnClosed, or nil
// while it is open.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.closedErr()
	default:
		return nil
	}
}

func (c *Conn) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection. Calls in flight return errors wrapping
// ErrConnClosed. Close returns once the read loop has exited.
func (c *Conn) Close() error {
	c.fail(ErrConnClosed)
	<-c.done
	return nil
}

// fail records why the connection ends (the first reason wins) and closes
// the socket, which ends the read loop.
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	if c.err == nil {
		if errors.Is(cause, ErrConnClosed) {
			c.err = cause
		} else {
			c.err = fmt.Errorf("%w: %w", ErrConnClosed, cause)
		}
	}
	c.mu.Unlock()
	c.nc.Close()
}

func (c *Conn) readLoop() {
	defer close(c.done)
	r := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		h, raw, err := wire.ReadFrame(r)
		if err != nil {
			if err == io.EOF {
				err = errors.New("worker closed the connection")
			}
			c.fail(err)
			return
		}
		c.mu.Lock()
		cl := c.pending[h.ID]
		if cl != nil {
			cl.frames = append(cl.frames, frame{typ: h.Type, raw: raw})
			select {
			case cl.ready <- struct{}{}:
			default:
			}
		}
		c.mu.Unlock()
		if cl == nil {
			c.log.Debug().Uint64("id", h.ID).Str("type", h.Type).Msg("dropped frame for no pending request")
		}
	}
}

// register allocates an id and a pending call for it.
func (c *Conn) register() (uint64, *call, error) {
	id := c.nextID.Add(1)
	cl := callPool.Get().(*call)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		callPool.Put(cl)
		return 0, nil, err
	}
	c.pending[id] = cl
	c.mu.Unlock()
	return id, cl, nil
}

// unregister forgets a call; no frame is delivered to it afterwards.
func (c *Conn) unregister(id uint64, cl *call) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
	select {
	case <-cl.ready:
	default:
	}
	clear(cl.frames)
	cl.frames = cl.frames[:0]
	callPool.Put(cl)
}

// next returns the next frame received for cl, waiting for one until ctx
// ends or the connection closes.
func (c *Conn) next(ctx context.Context, cl *call, timeout <-chan time.Time) (frame, error) {
	for {
		c.mu.Lock()
		if len(cl.frames) > 0 {
			// Shift rather than reslice: the pooled call keeps its slice's
			// capacity, so the read loop's append does not allocate again
			// on every round trip.
			f := cl.frames[0]
			n := copy(cl.frames, cl.frames[1:])
			cl.frames[n] = frame{}
			cl.frames = cl.frames[:n]
			c.mu.Unlock()
			return f, nil
		}
		c.mu.Unlock()
		select {
		case <-cl.ready:
		case <-c.done:
			// Frames may have arrived just before the loop ended.
			c.mu.Lock()
			n := len(cl.frames)
			c.mu.Unlock()
			if n == 0 {
				return frame{}, c.closedErr()
			}
		case <-ctx.Done():
			return frame{}, ctx.Err()
		case <-timeout:
			return frame{}, errGraceExpired
		}
	}
}

var errGraceExpired = errors.New("grace period expired")

// send writes one request frame.
func (c *Conn) send(id uint64, typ string, req any) error {
	c.wmu.Lock()
	err := wire.WriteFrame(c.nc, wire.Header{ID: id, Type: typ}, req)
	c.wmu.Unlock()
	if err != nil {
		if errors.Is(err, wire.ErrMalformedFrame) || errors.Is(err, wire.ErrFrameSize) || errors.Is(err, wire.ErrEncodeBody) {
			return err // nothing was written; the connection is fine
		}
		c.fail(err)
		if cerr := c.closedErr(); cerr != nil {
			return cerr
		}
		return fmt.Errorf("%w: %w", ErrConnClosed, err)
	}
	return nil
}

// Call sends a request of type typ with body req and waits for its terminal
// reply, decoding an ok body into reply (which may be nil). An error frame
// is returned as *wire.Error. If ctx ends first, Call returns ctx.Err()
// wrapped and the late reply is dropped. Use Run for run requests.
func (c *Conn) Call(ctx context.Context, typ string, req any, reply any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("worker %s: %w", typ, err)
	}
	id, cl, err := c.register()
	if err != nil {
		return fmt.Errorf("worker %s: %w", typ, err)
	}
	defer c.unregister(id, cl)
	if err := c.send(id, typ, req); err != nil {
		return fmt.Errorf("worker %s: %w", typ, err)
	}
	for {
		f, err := c.next(ctx, cl, nil)
		if err != nil {
			return fmt.Errorf("worker %s %d: %w", typ, id, err)
		}
		switch f.typ {
		case wire.TypeOK, wire.TypeResult:
			if reply == nil {
				return nil
			}
			if err := wire.DecodeBody(f.raw, reply); err != nil {
				return fmt.Errorf("worker %s %d: reply: %w", typ, id, err)
			}
			return nil
		case wire.TypeError:
			return decodeError(f.raw)
		case wire.TypeProgress:
			continue
		default:
			return fmt.Errorf("worker %s %d: unexpected reply type %q", typ, id, f.typ)
		}
	}
}

// decodeError turns an error frame's body into a *wire.Error.
// enterStage makes stage k of run id resident (onStage) and releases it
// with a stage request, or cancels the run (fail) with onStage's error.
func (c *Conn) enterStage(ctx context.Context, id uint64, k int, onStage func(int) error, fail func(error)) {
	if onStage != nil {
		if err := onStage(k); err != nil {
			fail(err)
			return
		}
	}
	if err := c.Call(ctx, wire.TypeStage, wire.StageRequest{Target: id, Stage: k}, nil); err != nil && ctx.Err() == nil {
		fail(fmt.Errorf("release stage %d: %w", k, err))
	}
}

func decodeError(raw msgpack.RawMessage) error {
	var er wire.ErrorReply
	if err := wire.DecodeBody(raw, &er); err != nil {
		return &wire.Error{Code: wire.ErrCodeInternal, Message: fmt.Sprintf("undecodable error frame: %v", err)}
	}
	return &wire.Error{Code: er.Code, Message: er.Message}
}

// Run sends a run request and waits for its result, calling onProgress
// (which may be nil) for each progress frame, in order, on Run's goroutine.
// A worker error frame is returned as *wire.Error.
//
// If ctx ends first, Run sends a cancel request for the run and waits up to
// CancelGrace for the run's terminal frame, so that the worker is idle when
// Run returns; either way it then returns an error wrapping ctx.Err(). If the
// worker does not stop in time, the error also says so, and the caller
// should consider the worker stuck.
func (c *Conn) Run(ctx context.Context, req wire.RunRequest, onProgress func(wire.Progress)) (wire.RunResult, error) {
	return c.RunStaged(ctx, req, onProgress, nil)
}

// RunStaged is Run for a request with Stages: when the worker asks for
// stage k (a progress frame with Stage k), RunStaged calls onStage(k) on
// its goroutine (the dispatcher makes the stage's models resident there)
// and then releases the stage with a stage request. When onStage fails, the
// run is cancelled as if ctx had ended, and RunStaged returns onStage's
// error once the worker has stopped. A nil onStage releases every stage at
// once.
func (c *Conn) RunStaged(ctx context.Context, req wire.RunRequest, onProgress func(wire.Progress),
	onStage func(stage int) error) (wire.RunResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stageErr error // set on Run's goroutine only
	fail := func(err error) { stageErr = err; cancel() }
	res, err := c.run(ctx, req, onProgress, onStage, fail)
	if err != nil && stageErr != nil {
		// The stage could not be made resident: that, not the cancel
		// that stopped the worker, is why the run ended.
		return res, fmt.Errorf("worker run %s: stage: %w", req.JobID, stageErr)
	}
	return res, err
}

func (c *Conn) run(ctx context.Context, req wire.RunRequest, onProgress func(wire.Progress),
	onStage func(stage int) error, fail func(error)) (wire.RunResult, error) {
	if err := ctx.Err(); err != nil {
		return wire.RunResult{}, fmt.Errorf("worker run %s: %w", req.JobID, err)
	}
	id, cl, err := c.register()
	if err != nil {
		return wire.RunResult{}, fmt.Errorf("worker run %s: %w", req.JobID, err)
	}
	defer c.unregister(id, cl)
	if err := c.send(id, wire.TypeRun, req); err != nil {
		return wire.RunResult{}, fmt.Errorf("worker run %s: %w", req.JobID, err)
	}
	var timeout <-chan time.Time
	waitCtx := ctx
	for {
		f, err := c.next(waitCtx, cl, timeout)
		switch {
		case err == nil:
		case waitCtx == ctx && ctx.Err() != nil:
			// Cancelled: ask the worker to stop, then wait for the end.
			cerr := ctx.Err()
			if serr := c.send(c.nextID.Add(1), wire.TypeCancel, wire.CancelRequest{Target: id}); serr != nil {
				return wire.RunResult{}, fmt.Errorf("worker run %s %d: %w (cancel not sent: %w)", req.JobID, id, cerr, serr)
			}
			t := time.NewTimer(c.cancelGrace)
			defer t.Stop()
			timeout, waitCtx = t.C, context.Background()
			continue
		case waitCtx != ctx && errors.Is(err, errGraceExpired):
			return wire.RunResult{}, fmt.Errorf("worker run %s %d: %w; worker did not stop within %s", req.JobID, id, ctx.Err(), c.cancelGrace)
		case waitCtx != ctx:
			return wire.RunResult{}, fmt.Errorf("worker run %s %d: %w (%w)", req.JobID, id, ctx.Err(), err)
		default:
			return wire.RunResult{}, fmt.Errorf("worker run %s %d: %w", req.JobID, id, err)
		}
		switch f.typ {
		case wire.TypeProgress:
			var p wire.Progress
			if err := wire.DecodeBody(f.raw, &p); err != nil {
				c.log.Warn().Err(err).Str("job", req.JobID).Msg("undecodable progress frame")
				continue
			}
			if p.Stage > 0 {
				if waitCtx != ctx {
					continue // cancelled meanwhile: the run is ending, not moving on
				}
				c.enterStage(ctx, id, p.Stage, onStage, fail)
				continue
			}
			if onProgress != nil {
				onProgress(p)
			}
			continue
		case wire.TypeResult, wire.TypeOK:
			if waitCtx != ctx {
				return wire.RunResult{}, fmt.Errorf("worker run %s %d: %w", req.JobID, id, ctx.Err())
			}
			var res wire.RunResult
			if err := wire.DecodeBody(f.raw, &res); err != nil {
				return wire.RunResult{}, fmt.Errorf("worker run %s %d: result: %w", req.JobID, id, err)
			}
			return res, nil
		case wire.TypeError:
			if waitCtx != ctx {
				return wire.RunResult{}, fmt.Errorf("worker run %s %d: %w", req.JobID, id, ctx.Err())
			}
			return wire.RunResult{}, decodeError(f.raw)
		default:
			return wire.RunResult{}, fmt.Errorf("worker run %s %d: unexpected reply type %q", req.JobID, id, f.typ)
		}
	}
}
