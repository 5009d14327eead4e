package worker

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
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
// Call and Run may be used from many goroutines at once, and replies are
// matched to requests by id.
//
// Who reads the socket: a caller waiting for a reply reads it itself when no
// one else is (it holds the read token, dispatching any frame for another
// call to that call), so that a lone round trip costs one wake-up on each
// side, as a raw socket echo does; a reply handed over by a separate read
// goroutine cost a third (BenchmarkConnPing: +7 µs at p50, half the echo's
// round trip). Other waiting callers wait for their frames or for the token.
// When the token has been free for IdleProbe, a background goroutine takes
// it and reads, so that a worker that closes its socket while nothing is
// pending is noticed (Done) and no frame waits unread; a caller interrupts
// it with a read deadline in the past and takes the token over. A caller's
// own context and grace deadline interrupt its read the same way. On a
// connection without deadlines (not pollable) the background goroutine
// reads for good and callers only wait, as before.
type Conn struct {
	nc  net.Conn
	log zerolog.Logger

	nextID      atomic.Uint64
	cancelGrace time.Duration

	wmu sync.Mutex // serializes frame writes

	// Owned by the read token's holder (handed over under mu).
	r       *bufio.Reader
	big     []byte // a frame too long for r's buffer, while it is read
	bigHave int

	mu      sync.Mutex
	pending map[uint64]*call
	err     error // why the connection closed; set once, under mu
	// reader holds the read token: nil when free, idleReader for the
	// background goroutine, else the call whose goroutine reads.
	reader        *call
	waiting       []*call // calls blocked in next, in arrival order
	handoff       bool    // a caller asked the background reader to stop
	deadlineSet   bool    // the socket has a read deadline to clear on release
	releases      uint64  // token releases; the background reader waits for a quiet probe
	interruptible bool    // SetReadDeadline works on nc

	done     chan struct{} // closed when the connection is gone
	bgExited chan struct{} // closed when the background reader has exited
}

// IdleProbe is how long the read token stays free before the background
// goroutine takes it to watch an idle connection.
const IdleProbe = 100 * time.Millisecond

// idleReader marks the read token as held by the background goroutine.
var idleReader = &call{}

// aLongTimeAgo is a read deadline in the past: it makes a blocked read
// return at once with a timeout.
var aLongTimeAgo = time.Unix(1, 0)

// call is one request waiting for its frames. The token's holder appends
// frames and signals ready; the caller drains them. Both hold Conn.mu.
type call struct {
	ready  chan struct{} // capacity 1: "frames has something, or the token is yours"
	frames []frame
}

// frame is one frame received for a call.
type frame struct {
	typ string
	raw msgpack.RawMessage
}

var callPool = sync.Pool{New: func() any { return &call{ready: make(chan struct{}, 1)} }}

// pop removes and returns the call's oldest frame. Callers hold Conn.mu.
func (cl *call) pop() (frame, bool) {
	if len(cl.frames) == 0 {
		return frame{}, false
	}
	// Shift rather than reslice: the pooled call keeps its slice's capacity,
	// so the reader's append does not allocate again on every round trip.
	f := cl.frames[0]
	n := copy(cl.frames, cl.frames[1:])
	cl.frames[n] = frame{}
	cl.frames = cl.frames[:n]
	return f, true
}

func (cl *call) signal() {
	select {
	case cl.ready <- struct{}{}:
	default:
	}
}

// NewConn wraps c, the kernel's end of a worker socket, and starts its
// background reader. The Conn owns c from then on.
func NewConn(c net.Conn, log zerolog.Logger) *Conn {
	conn := &Conn{
		nc:            c,
		log:           log,
		cancelGrace:   CancelGrace,
		r:             bufio.NewReaderSize(c, 64<<10),
		pending:       make(map[uint64]*call),
		interruptible: c.SetReadDeadline(time.Time{}) == nil,
		done:          make(chan struct{}),
		bgExited:      make(chan struct{}),
	}
	if !conn.interruptible {
		conn.reader = idleReader
	}
	go conn.background()
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
// ErrConnClosed. Close returns once the background reader has exited.
func (c *Conn) Close() error {
	c.fail(ErrConnClosed)
	<-c.bgExited
	return nil
}

// fail records why the connection ends (the first reason wins), closes the
// socket, which ends any read, and closes Done.
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	first := c.err == nil
	if first {
		if errors.Is(cause, ErrConnClosed) {
			c.err = cause
		} else {
			c.err = fmt.Errorf("%w: %w", ErrConnClosed, cause)
		}
	}
	c.mu.Unlock()
	c.nc.Close()
	if first {
		close(c.done)
	}
}

// readFailed turns a failed read into the connection's end.
func (c *Conn) readFailed(err error) error {
	if err == io.EOF {
		err = errors.New("worker closed the connection")
	}
	c.fail(err)
	return c.closedErr()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readFrame reads the next frame. Unlike wire.ReadFrame it can be resumed
// after a read deadline interrupts it inside a frame: a frame that fits the
// buffer is only consumed once whole (Peek), and a longer one keeps its
// partial payload in c.big. Only the read token's holder calls it.
func (c *Conn) readFrame() (wire.Header, msgpack.RawMessage, error) {
	if c.big == nil {
		lenBuf, err := c.r.Peek(4)
		if err != nil {
			if err == io.EOF && len(lenBuf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return wire.Header{}, nil, err
		}
		n := int(binary.BigEndian.Uint32(lenBuf))
		if n == 0 || n > wire.MaxFrameBytes {
			return wire.Header{}, nil, fmt.Errorf("read frame: %w: %d bytes", wire.ErrFrameSize, n)
		}
		if 4+n <= c.r.Size() {
			whole, err := c.r.Peek(4 + n)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return wire.Header{}, nil, err
			}
			buf := make([]byte, n)
			copy(buf, whole[4:])
			_, _ = c.r.Discard(4 + n)
			return wire.ParseFrame(buf)
		}
		c.big, c.bigHave = make([]byte, n), 0
		_, _ = c.r.Discard(4)
	}
	for c.bigHave < len(c.big) {
		m, err := c.r.Read(c.big[c.bigHave:])
		c.bigHave += m
		if err != nil && c.bigHave < len(c.big) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return wire.Header{}, nil, err
		}
	}
	buf := c.big
	c.big = nil
	return wire.ParseFrame(buf)
}

// deliverLocked hands a frame read by the token's holder to its call, or
// drops it when no call waits for that id (a late reply to an abandoned
// call). It reports the call. Callers hold c.mu.
func (c *Conn) deliverLocked(h wire.Header, raw msgpack.RawMessage) *call {
	cl := c.pending[h.ID]
	if cl != nil {
		cl.frames = append(cl.frames, frame{typ: h.Type, raw: raw})
		cl.signal()
	}
	return cl
}

// releaseLocked gives up the read token: to the first waiting call, whose
// goroutine then reads, or to no one. Callers hold c.mu and the token.
func (c *Conn) releaseLocked() {
	if c.deadlineSet {
		_ = c.nc.SetReadDeadline(time.Time{})
		c.deadlineSet = false
	}
	c.releases++
	if len(c.waiting) > 0 {
		next := c.waiting[0]
		c.waiting = slices.Delete(c.waiting, 0, 1)
		c.reader = next
		next.signal()
		return
	}
	c.reader = nil
}

// interrupt makes the read of cl's goroutine return with a timeout, if cl
// still holds the token.
func (c *Conn) interrupt(cl *call) {
	c.mu.Lock()
	if c.reader == cl {
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
		c.deadlineSet = true
	}
	c.mu.Unlock()
}

// background reads while the token is free and no caller wants it: for
// good on a connection without deadlines, else after IdleProbe of quiet.
func (c *Conn) background() {
	defer close(c.bgExited)
	if !c.interruptible {
		c.readIdle()
		return
	}
	t := time.NewTicker(IdleProbe)
	defer t.Stop()
	var seen uint64
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.mu.Lock()
		quiet := c.reader == nil && c.releases == seen && c.err == nil
		seen = c.releases
		if quiet {
			c.reader = idleReader
		}
		c.mu.Unlock()
		if quiet && !c.readIdle() {
			return
		}
	}
}

// readIdle reads and delivers frames as the background reader until a
// caller asks for the token (true) or the connection ends (false).
func (c *Conn) readIdle() bool {
	for {
		h, raw, err := c.readFrame()
		if err != nil {
			if c.interruptible && isTimeout(err) {
				c.mu.Lock()
				if c.handoff {
					c.handoff = false
					c.releaseLocked()
					c.mu.Unlock()
					return true
				}
				// Not a handoff: no deadline should be set; clear it
				// rather than spin on timeouts.
				_ = c.nc.SetReadDeadline(time.Time{})
				c.deadlineSet = false
				c.mu.Unlock()
				continue
			}
			c.readFailed(err)
			return false
		}
		c.mu.Lock()
		cl := c.deliverLocked(h, raw)
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
// ends, the deadline (if not zero) passes or the connection closes —
// reading the socket itself while it holds the read token.
func (c *Conn) next(ctx context.Context, cl *call, deadline time.Time) (frame, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		if f, ok := cl.pop(); ok {
			if c.reader == cl {
				// Granted the token as the frame came: a caller that
				// returns must not keep it.
				c.releaseLocked()
			}
			c.mu.Unlock()
			return f, nil
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return frame{}, err
		}
		switch c.reader {
		case nil:
			c.reader = cl
		case idleReader:
			if c.interruptible && !c.handoff {
				c.handoff = true
				_ = c.nc.SetReadDeadline(aLongTimeAgo)
				c.deadlineSet = true
			}
		}
		if c.reader == cl {
			c.mu.Unlock()
			return c.lead(ctx, cl, deadline)
		}
		c.waiting = append(c.waiting, cl)
		c.mu.Unlock()

		var timeout <-chan time.Time
		if !deadline.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(deadline))
			}
			timeout = timer.C
		}
		var err error
		select {
		case <-cl.ready:
		case <-c.done: // the loop finds the frames that came first, then c.err
		case <-ctx.Done():
			err = ctx.Err()
		case <-timeout:
			err = errGraceExpired
		}
		c.mu.Lock()
		if i := slices.Index(c.waiting, cl); i >= 0 {
			c.waiting = slices.Delete(c.waiting, i, i+1)
		}
		if err != nil && c.reader == cl {
			c.releaseLocked() // granted the token on the way out: pass it on
		}
		c.mu.Unlock()
		if err != nil {
			return frame{}, err
		}
	}
}

// lead reads frames as the token's holder, delivering other calls' frames,
// until one for cl comes, ctx ends or the deadline passes; it then gives the
// token up. A blocked read is interrupted by a read deadline: cl's own, or
// one in the past set when ctx ends.
func (c *Conn) lead(ctx context.Context, cl *call, deadline time.Time) (frame, error) {
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.interrupt(cl) })
		defer stop()
	}
	c.mu.Lock()
	if !deadline.IsZero() {
		_ = c.nc.SetReadDeadline(deadline)
		c.deadlineSet = true
	}
	if err := ctx.Err(); err != nil {
		c.releaseLocked()
		c.mu.Unlock()
		return frame{}, err
	}
	c.mu.Unlock()
	for {
		h, raw, err := c.readFrame()
		if err != nil {
			if !isTimeout(err) {
				return frame{}, c.readFailed(err)
			}
			c.mu.Lock()
			switch {
			case ctx.Err() != nil:
				err = ctx.Err()
			case !deadline.IsZero() && !time.Now().Before(deadline):
				err = errGraceExpired
			default:
				// A deadline set for the background reader or for the
				// previous holder: restore this holder's own and read on.
				_ = c.nc.SetReadDeadline(deadline)
				c.deadlineSet = !deadline.IsZero()
				c.mu.Unlock()
				continue
			}
			c.releaseLocked()
			c.mu.Unlock()
			return frame{}, err
		}
		c.mu.Lock()
		target := c.pending[h.ID]
		if target == cl {
			c.releaseLocked()
			c.mu.Unlock()
			return frame{typ: h.Type, raw: raw}, nil
		}
		c.deliverLocked(h, raw)
		c.mu.Unlock()
		if target == nil {
			c.log.Debug().Uint64("id", h.ID).Str("type", h.Type).Msg("dropped frame for no pending request")
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
		f, err := c.next(ctx, cl, time.Time{})
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
	var graceEnds time.Time
	waitCtx := ctx
	for {
		f, err := c.next(waitCtx, cl, graceEnds)
		switch {
		case err == nil:
		case waitCtx == ctx && ctx.Err() != nil:
			// Cancelled: ask the worker to stop, then wait for the end.
			cerr := ctx.Err()
			if serr := c.send(c.nextID.Add(1), wire.TypeCancel, wire.CancelRequest{Target: id}); serr != nil {
				return wire.RunResult{}, fmt.Errorf("worker run %s %d: %w (cancel not sent: %w)", req.JobID, id, cerr, serr)
			}
			graceEnds, waitCtx = time.Now().Add(c.cancelGrace), context.Background()
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
