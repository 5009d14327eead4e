package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"

	"github.com/vmihailenco/msgpack/v5"
)

// Serve speaks the worker side of the protocol on conn until the kernel
// closes it or ctx ends, and then closes conn.
//
// The first frame must be hello: Serve checks the protocol version (a
// mismatch is answered with an ErrCodeUnsupported error frame and Serve
// returns an error), calls h.Hello and sends its reply. After that every
// request runs on its own goroutine, so many are in flight at once. Serve
// answers ping and cancel itself; a run gets a context that a cancel request
// for its id (or the end of Serve) cancels. A handler panic becomes an
// ErrCodeInternal error frame. Unknown message types are answered with an
// ErrCodeUnsupported error frame.
//
// Serve returns nil when the kernel closes the connection (the usual way a
// worker is told to exit) or when ctx ends, and an error when the stream is
// broken or malformed. Before returning it cancels every run and waits for
// the handler calls in flight to return, so handlers must honour their
// context.
func Serve(ctx context.Context, conn io.ReadWriteCloser, h Handler) error {
	ctx, cancel := context.WithCancel(ctx)
	s := &server{
		conn: conn,
		h:    h,
		ctx:  ctx,
		runs: make(map[uint64]*runState),
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err := s.serve(bufio.NewReaderSize(conn, 64<<10))
	stop()
	cancel()
	s.wg.Wait()
	conn.Close()
	return err
}

// server is the state of one Serve call.
type server struct {
	conn io.ReadWriteCloser
	h    Handler
	ctx  context.Context

	wmu sync.Mutex // serializes frame writes

	mu   sync.Mutex
	runs map[uint64]*runState // runs in flight by request id

	wg sync.WaitGroup // handler goroutines in flight

	// ping and pong are the read loop's own; see TypePing in serve.
	ping PingRequest
	pong PingReply
}

// runState tracks one run in flight. mu orders its progress frames before
// its terminal frame even when the handler reports progress from other
// goroutines.
type runState struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	done   bool
	// stages receives the stage numbers the kernel's stage requests
	// release (AwaitStage).
	stages chan int
}

func (s *server) serve(r *bufio.Reader) error {
	hdr, body, err := ReadFrame(r)
	if err != nil {
		return s.readErr(err, "hello")
	}
	if err := s.hello(hdr, body); err != nil {
		return err
	}
	for {
		hdr, body, err := ReadFrame(r)
		if err != nil {
			return s.readErr(err, "request")
		}
		if hdr.ID == 0 {
			s.sendError(hdr.ID, ErrCodeBadRequest, fmt.Sprintf("%s request with id 0", hdr.Type))
			continue
		}
		switch hdr.Type {
		case TypePing:
			// Answered inline: cheapest round trip, no handler involved.
			// The request and reply live in the server (only this loop
			// uses them), so that decoding into them and passing the
			// reply as an interface allocate nothing.
			s.ping = PingRequest{}
			if err := DecodeBody(body, &s.ping); err != nil {
				s.sendError(hdr.ID, ErrCodeBadRequest, err.Error())
				continue
			}
			s.pong = PingReply(s.ping)
			s.send(Header{ID: hdr.ID, Type: TypeOK}, &s.pong)
		case TypeCancel:
			var req CancelRequest
			if err := DecodeBody(body, &req); err != nil {
				s.sendError(hdr.ID, ErrCodeBadRequest, err.Error())
				continue
			}
			s.mu.Lock()
			if rs := s.runs[req.Target]; rs != nil {
				rs.cancel()
			}
			s.mu.Unlock()
			s.send(Header{ID: hdr.ID, Type: TypeOK}, nil)
		case TypeStage:
			var req StageRequest
			if err := DecodeBody(body, &req); err != nil {
				s.sendError(hdr.ID, ErrCodeBadRequest, err.Error())
				continue
			}
			s.mu.Lock()
			if rs := s.runs[req.Target]; rs != nil {
				select {
				case rs.stages <- req.Stage:
				default: // a release nobody asked for: the run has one pending at most
				}
			}
			s.mu.Unlock()
			s.send(Header{ID: hdr.ID, Type: TypeOK}, nil)
		case TypeRun:
			s.startRun(hdr.ID, body)
		case TypeLoad:
			s.goCall(hdr.ID, func(ctx context.Context) (any, error) {
				var req LoadRequest
				if err := DecodeBody(body, &req); err != nil {
					return nil, &Error{Code: ErrCodeBadRequest, Message: err.Error()}
				}
				return s.h.Load(ctx, req)
			})
		case TypeUnload:
			s.goCall(hdr.ID, func(ctx context.Context) (any, error) {
				var req UnloadRequest
				if err := DecodeBody(body, &req); err != nil {
					return nil, &Error{Code: ErrCodeBadRequest, Message: err.Error()}
				}
				return s.h.Unload(ctx, req)
			})
		case TypeStats:
			s.goCall(hdr.ID, func(ctx context.Context) (any, error) {
				return s.h.Stats(ctx)
			})
		case TypeHello:
			s.sendError(hdr.ID, ErrCodeBadRequest, "hello sent twice")
		default:
			s.sendError(hdr.ID, ErrCodeUnsupported, fmt.Sprintf("unknown message type %q", hdr.Type))
		}
	}
}

// readErr turns a read error into Serve's result: a clean close or the end
// of ctx is not an error.
func (s *server) readErr(err error, what string) error {
	if errors.Is(err, io.EOF) || s.ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("serve: read %s: %w", what, err)
}

func (s *server) hello(hdr Header, body msgpack.RawMessage) error {
	if hdr.Type != TypeHello {
		msg := fmt.Sprintf("first frame is %q, want %q", hdr.Type, TypeHello)
		s.sendError(hdr.ID, ErrCodeBadRequest, msg)
		return fmt.Errorf("serve: %s", msg)
	}
	var req HelloRequest
	if err := DecodeBody(body, &req); err != nil {
		s.sendError(hdr.ID, ErrCodeBadRequest, err.Error())
		return fmt.Errorf("serve: hello: %w", err)
	}
	if req.Protocol != ProtocolVersion {
		msg := fmt.Sprintf("protocol %d not supported, this worker speaks %d", req.Protocol, ProtocolVersion)
		s.sendError(hdr.ID, ErrCodeUnsupported, msg)
		return fmt.Errorf("serve: hello: %s", msg)
	}
	reply, err := guard(func() (any, error) {
		rep, err := s.h.Hello(s.ctx, req)
		if err == nil && rep.Protocol == 0 {
			rep.Protocol = ProtocolVersion
		}
		if err == nil && !slices.Contains(rep.Capabilities, CapabilityWorkflowJSON) {
			// startRun decodes RunRequest.WorkflowJSON for every handler.
			rep.Capabilities = append(slices.Clone(rep.Capabilities), CapabilityWorkflowJSON)
		}
		return rep, err
	})
	if err != nil {
		code, msg := errorCode(err, s.ctx)
		s.sendError(hdr.ID, code, msg)
		return fmt.Errorf("serve: hello: %w", err)
	}
	s.send(Header{ID: hdr.ID, Type: TypeOK}, reply)
	return nil
}

// goCall runs fn on its own goroutine and sends its ok or error reply.
func (s *server) goCall(id uint64, fn func(context.Context) (any, error)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		reply, err := guard(func() (any, error) { return fn(s.ctx) })
		if err != nil {
			code, msg := errorCode(err, s.ctx)
			s.sendError(id, code, msg)
			return
		}
		s.send(Header{ID: id, Type: TypeOK}, reply)
	}()
}

func (s *server) startRun(id uint64, body msgpack.RawMessage) {
	var req RunRequest
	if err := DecodeBody(body, &req); err != nil {
		s.sendError(id, ErrCodeBadRequest, err.Error())
		return
	}
	if req.Workflow == nil && len(req.WorkflowJSON) > 0 {
		// Protocol 1.3: the kernel sent the client's bytes. Decoded as
		// encoding/json does without UseNumber, the graph holds the types
		// a 1.2 kernel's msgpack map held (numbers as float64), so
		// handlers see no difference.
		if err := json.Unmarshal(req.WorkflowJSON, &req.Workflow); err != nil || req.Workflow == nil {
			s.sendError(id, ErrCodeBadRequest, fmt.Sprintf("workflow_json is not a JSON object: %v", err))
			return
		}
	}
	ctx, cancel := context.WithCancel(s.ctx)
	rs := &runState{cancel: cancel, stages: make(chan int, 1)}
	s.mu.Lock()
	if s.runs[id] != nil {
		s.mu.Unlock()
		cancel()
		s.sendError(id, ErrCodeBadRequest, fmt.Sprintf("run id %d already in flight", id))
		return
	}
	s.runs[id] = rs
	s.mu.Unlock()

	progress := func(p Progress) {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		if !rs.done {
			s.send(Header{ID: id, Type: TypeProgress}, p)
		}
	}
	ctx = context.WithValue(ctx, stageGateKey{}, &stageGate{jobID: req.JobID, planned: len(req.Stages), progress: progress, released: rs.stages})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		res, err := guard(func() (any, error) { return s.h.Run(ctx, req, progress) })
		s.mu.Lock()
		delete(s.runs, id)
		s.mu.Unlock()
		rs.mu.Lock()
		defer rs.mu.Unlock()
		rs.done = true
		if err != nil {
			code, msg := errorCode(err, ctx)
			s.sendError(id, code, msg)
			return
		}
		s.send(Header{ID: id, Type: TypeResult}, res)
	}()
}

type stageGateKey struct{}

// stageGate is what AwaitStage needs of the run it is called from.
type stageGate struct {
	jobID    string
	planned  int // len(RunRequest.Stages)
	progress func(Progress)
	released <-chan int
}

// AwaitStage is called by a Handler's Run, with Run's ctx, before it
// executes the first node of stage k of its RunRequest's Stages (k ≥ 1):
// it tells the kernel (a Progress with Stage k at node) and waits until the
// kernel has the stage's models loaded. It returns at once when the run
// has no such stage (the kernel sent no plan: every model was loaded
// before run), and ctx's error when the run is cancelled meanwhile — which
// is also how the kernel says it cannot make room for the stage. Stages
// are entered in order, each once.
func AwaitStage(ctx context.Context, k int, node string) error {
	g, _ := ctx.Value(stageGateKey{}).(*stageGate)
	if g == nil || k <= 0 || k >= g.planned {
		return nil
	}
	g.progress(Progress{JobID: g.jobID, Node: node, Stage: k})
	for {
		select {
		case got := <-g.released:
			if got == k {
				return nil
			}
			// A late release of an earlier stage: keep waiting for k.
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// guard calls fn and turns a panic into an error.
func guard(fn func() (any, error)) (reply any, err error) {
	defer func() {
		if p := recover(); p != nil {
			reply, err = nil, &Error{Code: ErrCodeInternal, Message: fmt.Sprintf("handler panic: %v\n%s", p, debug.Stack())}
		}
	}()
	return fn()
}

// errorCode picks the error frame code for a handler error.
func errorCode(err error, ctx context.Context) (string, string) {
	var we *Error
	switch {
	case errors.As(err, &we):
		return we.Code, we.Message
	case ctx.Err() != nil:
		return ErrCodeCancelled, err.Error()
	default:
		return ErrCodeInternal, err.Error()
	}
}

func (s *server) sendError(id uint64, code, msg string) {
	s.send(Header{ID: id, Type: TypeError}, ErrorReply{Code: code, Message: msg})
}

// send writes one frame. A failed write means the connection is gone; the
// read loop sees that too and ends Serve, so the error is dropped here. A
// reply that cannot be encoded is replaced by an error frame.
func (s *server) send(h Header, body any) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := WriteFrame(s.conn, h, body)
	if err != nil && h.Type != TypeError && isEncodeErr(err) {
		_ = WriteFrame(s.conn, Header{ID: h.ID, Type: TypeError},
			ErrorReply{Code: ErrCodeInternal, Message: err.Error()})
	}
}

// isEncodeErr reports whether a WriteFrame error came from the frame's
// content rather than from the connection.
func isEncodeErr(err error) bool {
	return errors.Is(err, ErrEncodeBody) || errors.Is(err, ErrMalformedFrame) || errors.Is(err, ErrFrameSize)
}

// ServeFD3 serves h on the socket the kernel passes as file descriptor 3,
// until the kernel closes it or the process receives SIGINT or SIGTERM. A
// worker's main is then:
//
//	func main() {
//		if err := worker.ServeFD3(myHandler{}); err != nil {
//			log.Fatal(err)
//		}
//	}
func ServeFD3(h Handler) error {
	ctx, stop := SignalContext()
	defer stop()
	return serveFile(ctx, os.NewFile(3, "kiln-worker-socket"), h)
}

// serveFile serves h on the socket held by f, which it closes.
func serveFile(ctx context.Context, f *os.File, h Handler) error {
	if f == nil {
		return errors.New("serve fd 3: no such file descriptor")
	}
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("serve fd 3: not a socket (a worker must be started by the kiln kernel, which passes its socket as fd 3): %w", err)
	}
	return Serve(ctx, conn, h)
}

// SignalContext returns a context that ends when the process receives
// SIGINT or SIGTERM, and a function that releases the signal handlers.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
