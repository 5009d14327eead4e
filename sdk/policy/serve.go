package policy

import "errors"

// Guest runs one policy behind the ABI's byte interface: it decodes an
// input snapshot, calls the policy and encodes its answer, reusing its
// buffers between calls. The WASM exports use the Guest that Serve installs;
// tests use NewGuest to drive a policy through exactly the bytes the host
// sends. A Guest is not safe for concurrent use.
type Guest struct {
	p      any
	params []Param
	buf    []byte
	out    []byte

	ev   EvictionInput
	evO  EvictionOutput
	sc   SchedulingInput
	scO  SchedulingOutput
	ba   BatchingInput
	baO  BatchingOutput
	bl   BalancingInput
	blO  BalancingOutput
	ro   RoutingInput
	roO  RoutingOutput
	decl []byte
}

// NewGuest wraps p, which must implement at least one of Evictor,
// Scheduler, Batcher, Balancer and Router.
func NewGuest(p any) (*Guest, error) {
	g := &Guest{p: p}
	if len(g.Kinds()) == 0 {
		return nil, errors.New("policy " + typeName(p) + " implements no policy kind")
	}
	if d, ok := p.(ParamDeclarer); ok {
		g.params = d.Params()
		for _, pr := range g.params {
			if err := pr.Validate(); err != nil {
				return nil, wrapError("policy "+typeName(p), err)
			}
		}
	}
	g.decl = AppendParams(nil, g.params)
	return g, nil
}

// Kinds lists the kinds the policy implements.
func (g *Guest) Kinds() []Kind {
	var ks []Kind
	if _, ok := g.p.(Evictor); ok {
		ks = append(ks, KindEviction)
	}
	if _, ok := g.p.(Scheduler); ok {
		ks = append(ks, KindScheduling)
	}
	if _, ok := g.p.(Batcher); ok {
		ks = append(ks, KindBatching)
	}
	if _, ok := g.p.(Balancer); ok {
		ks = append(ks, KindBalancing)
	}
	if _, ok := g.p.(Router); ok {
		ks = append(ks, KindRouting)
	}
	return ks
}

// Buffer returns the input buffer, grown to at least n bytes. It stays
// valid until the next call to Buffer.
func (g *Guest) Buffer(n int) []byte {
	if cap(g.buf) < n {
		g.buf = make([]byte, n)
	}
	g.buf = g.buf[:n]
	return g.buf
}

// ParamTable returns the encoded parameter declarations (kiln_params).
func (g *Guest) ParamTable() []byte { return g.decl }

// Call decodes the first n bytes of the buffer as an input of kind k, runs
// the policy and returns its encoded answer, valid until the next Call. An
// input that does not decode, or a kind the policy lacks, is answered with
// StatusError or StatusUnsupported.
func (g *Guest) Call(k Kind, in []byte) []byte {
	g.out = g.out[:0]
	switch k {
	case KindEviction:
		p, ok := g.p.(Evictor)
		o := &g.evO
		*o = EvictionOutput{Victims: o.Victims[:0], Prefetch: o.Prefetch[:0], Tags: o.Tags[:0]}
		st := g.status(ok, DecodeEvictionInput(in, &g.ev))
		if st == StatusOK {
			o.State = g.ev.State
			st = p.Evict(&g.ev, o)
		}
		g.out = AppendEvictionOutput(g.out, st, o)
	case KindScheduling:
		p, ok := g.p.(Scheduler)
		o := &g.scO
		*o = SchedulingOutput{Dispatch: o.Dispatch[:0], Preempt: o.Preempt[:0]}
		st := g.status(ok, DecodeSchedulingInput(in, &g.sc))
		if st == StatusOK {
			o.State = g.sc.State
			st = p.Schedule(&g.sc, o)
		}
		g.out = AppendSchedulingOutput(g.out, st, o)
	case KindBatching:
		p, ok := g.p.(Batcher)
		o := &g.baO
		*o = BatchingOutput{Batch: o.Batch[:0]}
		st := g.status(ok, DecodeBatchingInput(in, &g.ba))
		if st == StatusOK {
			o.State = g.ba.State
			st = p.Batch(&g.ba, o)
		}
		g.out = AppendBatchingOutput(g.out, st, o)
	case KindBalancing:
		p, ok := g.p.(Balancer)
		o := &g.blO
		*o = BalancingOutput{Worker: NoWorker}
		st := g.status(ok, DecodeBalancingInput(in, &g.bl))
		if st == StatusOK {
			o.State = g.bl.State
			st = p.Balance(&g.bl, o)
		}
		g.out = AppendBalancingOutput(g.out, st, o)
	case KindRouting:
		p, ok := g.p.(Router)
		o := &g.roO
		*o = RoutingOutput{Node: NoNode}
		st := g.status(ok, DecodeRoutingInput(in, &g.ro))
		if st == StatusOK {
			o.State = g.ro.State
			st = p.Route(&g.ro, o)
		}
		g.out = AppendRoutingOutput(g.out, st, o)
	default:
		g.out = appendOutHeader(g.out, StatusUnsupported, k, &[4]uint64{})
	}
	return g.out
}

func (g *Guest) status(implemented bool, decodeErr error) Status {
	switch {
	case !implemented:
		return StatusUnsupported
	case decodeErr != nil:
		Log(LevelError, "decode input: "+decodeErr.Error())
		return StatusError
	}
	return StatusOK
}

// served is the Guest that the WASM exports call.
var served *Guest

// Serve installs p as the module's policy. Call it from an init function of
// the module's main package:
//
//	func init() { policy.Serve(lru.New()) }
//	func main() {}
//
// Natively Serve only records p, so the same main package also builds for
// the host platform. It panics when p implements no kind.
func Serve(p any) {
	g, err := NewGuest(p)
	if err != nil {
		panic(err)
	}
	served = g
}

// Log levels for Log.
const (
	LevelDebug = 0
	LevelInfo  = 1
	LevelWarn  = 2
	LevelError = 3
)

// NativeLog receives Log's messages when the policy runs natively; nil
// drops them.
var NativeLog func(level int, msg string)
