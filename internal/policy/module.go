package policy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Fault kinds, as FaultError.Kind and in metrics.
const (
	FaultTrap    = "trap"
	FaultTimeout = "timeout"
	FaultInvalid = "invalid"
	FaultStatus  = "error_status"
)

// FaultError is a decision that failed inside a policy: a trap, a timeout,
// an invalid answer or an error status. The host answers with the fallback.
type FaultError struct {
	Kind string
	Err  error
}

func (e *FaultError) Error() string { return e.Kind + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *FaultError) Unwrap() error { return e.Err }

// ErrABIVersion is wrapped by load errors for a module of another ABI major
// version or a newer minor one.
var ErrABIVersion = errors.New("unsupported policy ABI version")

// allowedWASI are the WASI preview-1 functions a module may import: what the
// Go runtime needs, no more. There are no preopened directories and no
// sockets, and the clock and randomness are wazero's deterministic fakes.
var allowedWASI = map[string]bool{
	"sched_yield": true, "proc_exit": true, "args_get": true, "args_sizes_get": true,
	"clock_time_get": true, "environ_get": true, "environ_sizes_get": true, "fd_write": true,
	"random_get": true, "poll_oneoff": true, "fd_close": true, "fd_fdstat_get": true,
	"fd_fdstat_set_flags": true, "fd_prestat_get": true, "fd_prestat_dir_name": true,
}

type sig struct{ params, results []api.ValueType }

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
	f64 = api.ValueTypeF64
)

// allowedHost are the host functions a module may import, with signatures.
var allowedHost = map[string]sig{
	"kiln.log":    {[]api.ValueType{i32, i32, i32}, nil},
	"kiln.param":  {[]api.ValueType{i32, i32}, []api.ValueType{f64}},
	"kiln.now_ns": {nil, []api.ValueType{i64}},
	"env.abort":   {[]api.ValueType{i32, i32, i32, i32}, nil}, // AssemblyScript's
}

var hookSig = sig{[]api.ValueType{i32}, []api.ValueType{i64}}

// hasSig says what an export's signature is, for an error about it: "" when
// it is missing.
func hasSig(f api.FunctionDefinition) string {
	if f == nil {
		return ""
	}
	return "; it has " + sigString(f)
}

func sameSig(f api.FunctionDefinition, s sig) bool {
	eq := func(a, b []api.ValueType) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	return eq(f.ParamTypes(), s.params) && eq(f.ResultTypes(), s.results)
}

func sigString(f api.FunctionDefinition) string {
	return sig{f.ParamTypes(), f.ResultTypes()}.String()
}

// String writes the signature as load errors do: (i32,i32)->(f64).
func (s sig) String() string {
	names := func(ts []api.ValueType) string {
		var out []string
		for _, t := range ts {
			out = append(out, api.ValueTypeName(t))
		}
		return strings.Join(out, ",")
	}
	return "(" + names(s.params) + ")->(" + names(s.results) + ")"
}

// validate checks a compiled module against the ABI before any instance
// exists: version marker, hook signatures, memory export, imports. It
// returns the minor version the module's marker declares.
func validate(cm wazero.CompiledModule, kind abi.Kind) (minor int, err error) {
	exports := cm.ExportedFunctions()
	var marker string
	for name, f := range exports {
		if !strings.HasPrefix(name, "kiln_abi_v") {
			continue
		}
		if marker != "" {
			return 0, fmt.Errorf("module exports two ABI markers, %s and %s", marker, name)
		}
		marker = name
		if len(f.ParamTypes()) != 0 || len(f.ResultTypes()) != 0 {
			return 0, fmt.Errorf("ABI marker %s must take and return nothing, has %s", name, sigString(f))
		}
	}
	if marker == "" {
		return 0, fmt.Errorf("module exports no ABI marker (kiln_abi_v%d_%d): %w", abi.ABIMajor, abi.ABIMinor, ErrABIVersion)
	}
	major, minorText, ok := strings.Cut(strings.TrimPrefix(marker, "kiln_abi_v"), "_")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minorText)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed ABI marker %s: %w", marker, ErrABIVersion)
	}
	if ma != abi.ABIMajor || mi > abi.ABIMinor {
		return 0, fmt.Errorf("module speaks policy ABI %d.%d, this kiln speaks %d.%d (same major, minor ≤ %d): %w",
			ma, mi, abi.ABIMajor, abi.ABIMinor, abi.ABIMinor, ErrABIVersion)
	}
	if f, ok := exports["kiln_buffer"]; !ok || !sameSig(f, sig{[]api.ValueType{i32}, []api.ValueType{i32}}) {
		return 0, fmt.Errorf("module must export kiln_buffer with signature (i32)->(i32)%s", hasSig(exports["kiln_buffer"]))
	}
	if f, ok := exports["kiln_params"]; ok && !sameSig(f, sig{nil, []api.ValueType{i64}}) {
		return 0, fmt.Errorf("kiln_params must be ()->(i64), is %s", sigString(f))
	}
	if f, ok := exports["_initialize"]; ok && (len(f.ParamTypes()) != 0 || len(f.ResultTypes()) != 0) {
		return 0, fmt.Errorf("_initialize must be ()->(), is %s", sigString(f))
	}
	for _, k := range abi.Kinds {
		f, ok := exports[k.Hook()]
		if !ok {
			if k == kind {
				return 0, fmt.Errorf("module does not export %s, the %s hook, with signature (i32)->(i64)", k.Hook(), k)
			}
			continue
		}
		if !sameSig(f, hookSig) {
			return 0, fmt.Errorf("hook %s must be (i32)->(i64), is %s", k.Hook(), sigString(f))
		}
	}
	if _, ok := cm.ExportedMemories()["memory"]; !ok {
		return 0, errors.New("module must export its memory as \"memory\"")
	}
	if len(cm.ImportedMemories()) > 0 {
		return 0, errors.New("module must not import memory")
	}
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		if mod == "wasi_snapshot_preview1" {
			if !allowedWASI[name] {
				return 0, fmt.Errorf("module imports %s.%s, which policies may not use", mod, name)
			}
			continue
		}
		s, ok := allowedHost[mod+"."+name]
		if !ok {
			return 0, fmt.Errorf("module imports %s.%s, which policies may not use (allowed: kiln.log, kiln.param, kiln.now_ns, env.abort and a few WASI functions)", mod, name)
		}
		if !sameSig(f, s) {
			return 0, fmt.Errorf("import %s.%s has signature %s; want %s", mod, name, sigString(f), s)
		}
	}
	return mi, nil
}

// module is one compiled, validated policy module and its instance pool.
type module struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	kind     abi.Kind
	// minor is the ABI minor version the module's marker declares: what
	// it can decode (an eviction input's demand section needs 1.3).
	minor   int
	timeout time.Duration
	wd      *watchdog
	pool    instancePool
	live    atomic.Int64
	// label names the module's version in its guest log lines
	// ("eviction.sieve@2"); set once the version has its number.
	label atomic.Pointer[string]
}

// setLabel names the module's version for its guest log lines.
func (m *module) setLabel(k abi.Kind, ref string) {
	l := k.String() + "." + ref
	m.label.Store(&l)
}

// instancePool holds a module's idle instances, at most max, last in first
// out (the instance used last has the warmest caches). A mutex and a slice
// rather than a channel: every decision takes an instance and gives it
// back, and the two channel operations were a third of the host's part of
// a call (~80 of 245 ns for an AssemblyScript guest).
type instancePool struct {
	mu     sync.Mutex
	idle   []*instance
	max    int
	closed bool
}

func (p *instancePool) take() *instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	in := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return in
}

// give keeps in unless the pool is full or closed.
func (p *instancePool) give(in *instance) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= p.max {
		return false
	}
	p.idle = append(p.idle, in)
	return true
}

// close refuses further instances and returns the idle ones, once.
func (p *instancePool) close() []*instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	return idle
}

// instance is one instantiated module. Calls on it are not goroutine-safe;
// the pool hands it to one caller at a time. A trap or timeout poisons it:
// the caller closes it instead of returning it.
type instance struct {
	mod      api.Module
	mem      api.Memory
	buffer   api.Function
	hook     api.Function
	params   api.Function
	deadline api.MutableGlobal // kiln.deadline: set by the watchdog, checked at every loop head
	bufPtr   uint32
	bufCap   uint32
	stack    [1]uint64
	// started is the watchdog epoch + 1 at which the call in flight began;
	// 0 when idle, killed once the watchdog has stopped it.
	started atomic.Uint64
	ctx     callCtx
}

// initialBuffer is the input buffer an instance asks for when it is made,
// so that decisions up to a few hundred candidates never grow it.
const initialBuffer = 64 << 10

type callCtxKey struct{}

// callInfo reaches host functions through the call's context.
type callInfo struct {
	now    int64
	params []abi.Param
	values []float64
	// limit, when set, replaces the module's call timeout: a load's
	// self-test judges answers, not speed, and must not fail a module
	// because a busy machine delayed one call (live calls keep the
	// configured timeout, and the fault counter judges speed there).
	limit time.Duration
}

// callCtx is each instance's context for its calls: it never ends (the
// deadline is the watchdog's) and carries the call's callInfo and the
// instance's module to the host functions, so that a call allocates no
// context.
type callCtx struct {
	ci  *callInfo
	mod *module
}

// moduleKey finds the calling instance's module in a host function's
// context (kiln.log names the policy with it).
type moduleKey struct{}

func (*callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*callCtx) Done() <-chan struct{}       { return nil }
func (*callCtx) Err() error                  { return nil }
func (c *callCtx) Value(key any) any {
	switch key.(type) {
	case callCtxKey:
		if c.ci != nil {
			return c.ci
		}
	case moduleKey:
		if c.mod != nil {
			return c.mod
		}
	}
	return nil
}

// errKilled is a call the watchdog stopped.
var errKilled = errors.New("stopped at its deadline")

func (m *module) newInstance(ctx context.Context) (*instance, error) {
	mod, err := m.rt.InstantiateModule(ctx, m.compiled, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	in := &instance{mod: mod, mem: mod.Memory(), buffer: mod.ExportedFunction("kiln_buffer"),
		hook: mod.ExportedFunction(m.kind.Hook()), params: mod.ExportedFunction("kiln_params")}
	in.ctx.mod = m
	in.deadline, _ = mod.ExportedGlobal(deadlineExport).(api.MutableGlobal)
	if in.mem == nil || in.buffer == nil || in.hook == nil || in.deadline == nil {
		_ = mod.Close(ctx)
		return nil, errors.New("instance lacks its memory, kiln_buffer, hook or deadline")
	}
	m.live.Add(1)
	m.wd.add(in)
	fail := func(err error) (*instance, error) {
		m.discard(in)
		return nil, err
	}
	// Start functions run under the watchdog like any call, with room for
	// a language runtime's initialisation.
	for _, name := range []string{startExport, "_initialize"} {
		if f := mod.ExportedFunction(name); f != nil {
			if err := in.invoke(m.wd, f, 10*m.timeout+time.Second); err != nil {
				return fail(fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	in.stack[0] = initialBuffer
	if err := in.invoke(m.wd, in.buffer, m.timeout+time.Second); err != nil {
		return fail(fmt.Errorf("kiln_buffer: %w", err))
	}
	in.bufPtr, in.bufCap = uint32(in.stack[0]), initialBuffer
	return in, nil
}

// invoke calls f with in.stack under the watchdog: limit is how long the
// call may run.
func (in *instance) invoke(wd *watchdog, f api.Function, limit time.Duration) error {
	e := wd.start(in, limit)
	err := f.CallWithStack(&in.ctx, in.stack[:])
	if !in.started.CompareAndSwap(e, 0) {
		return errKilled
	}
	return err
}

func (m *module) get(ctx context.Context) (*instance, error) {
	if in := m.pool.take(); in != nil {
		return in, nil
	}
	return m.newInstance(ctx)
}

func (m *module) put(in *instance) {
	if !m.pool.give(in) {
		m.discard(in)
	}
}

func (m *module) discard(in *instance) {
	m.wd.remove(in)
	m.live.Add(-1)
	_ = in.mod.Close(context.Background())
}

// warm fills the pool up to n instances.
func (m *module) warm(ctx context.Context, n int) error {
	for range n {
		in, err := m.newInstance(ctx)
		if err != nil {
			return err
		}
		m.put(in)
	}
	return nil
}

func (m *module) close() {
	for _, in := range m.pool.close() {
		m.discard(in)
	}
}

// maxOutput bounds an answer: no legal answer is larger than its input
// (every list in an answer indexes a list of larger records in the input)
// plus the header.
func maxOutput(inLen int) uint32 { return uint32(min(inLen*2+1024, math.MaxInt32)) }

// fault turns a failed call into the FaultError it counts as.
func (m *module) fault(err error) error {
	if errors.Is(err, errKilled) {
		return &FaultError{Kind: FaultTimeout, Err: fmt.Errorf("no answer within %s", m.timeout)}
	}
	return &FaultError{Kind: FaultTrap, Err: err}
}

// call runs the kind's hook on input and appends its answer to dst. The
// decision path (decide) encodes and decodes in guest memory instead; this
// is for callers that hold an encoded input.
func (m *module) call(ctx context.Context, ci *callInfo, input, dst []byte) ([]byte, error) {
	in, err := m.get(ctx)
	if err != nil {
		return dst, &FaultError{Kind: FaultTrap, Err: err}
	}
	out, err := in.run(m, ci, input)
	if err != nil {
		m.discard(in)
		return dst, m.fault(err)
	}
	dst = append(dst, out...)
	m.put(in)
	return dst, nil
}

// inputBuffer returns the guest's input buffer as an empty slice whose
// capacity is the buffer, so that an encoder appending to it writes the
// snapshot straight into guest memory.
func (in *instance) inputBuffer() []byte {
	b, ok := in.mem.Read(in.bufPtr, in.bufCap)
	if !ok {
		return nil
	}
	return b[:0]
}

// run calls the hook on input, which is either what inputBuffer returned,
// appended to, or any other bytes (copied in, growing the guest's buffer
// when needed). The answer it returns is a view of guest memory, valid
// until the instance's next call.
func (in *instance) run(m *module, ci *callInfo, input []byte) ([]byte, error) {
	if !inPlace(input, in) {
		if uint32(len(input)) > in.bufCap {
			in.stack[0] = uint64(len(input))
			if err := in.invoke(m.wd, in.buffer, m.timeout); err != nil {
				return nil, fmt.Errorf("kiln_buffer: %w", err)
			}
			in.bufPtr, in.bufCap = uint32(in.stack[0]), uint32(len(input))
		}
		if !in.mem.Write(in.bufPtr, input) {
			return nil, fmt.Errorf("kiln_buffer returned %#x, outside memory", in.bufPtr)
		}
	}
	in.ctx.ci = ci
	in.stack[0] = uint64(len(input))
	limit := m.timeout
	if ci.limit > 0 {
		limit = ci.limit
	}
	err := in.invoke(m.wd, in.hook, limit)
	in.ctx.ci = nil
	if err != nil {
		return nil, err
	}
	ptr, n := uint32(in.stack[0]>>32), uint32(in.stack[0])
	if limit := maxOutput(len(input)); n > limit {
		return nil, fmt.Errorf("answer of %d bytes exceeds the %d-byte limit", n, limit)
	}
	b, ok := in.mem.Read(ptr, n)
	if !ok {
		return nil, fmt.Errorf("answer [%#x,+%d) is outside memory", ptr, n)
	}
	return b, nil
}

// inPlace reports whether b is the instance's input buffer (an encoder
// appended to inputBuffer without outgrowing it).
func inPlace(b []byte, in *instance) bool {
	if len(b) == 0 || cap(b) != int(in.bufCap) {
		return false
	}
	buf, ok := in.mem.Read(in.bufPtr, in.bufCap)
	return ok && &buf[0] == &b[0]
}

// readParams asks a fresh instance for its parameter declarations.
func (m *module) readParams(ctx context.Context) ([]abi.Param, error) {
	in, err := m.get(ctx)
	if err != nil {
		return nil, err
	}
	if in.params == nil {
		m.put(in)
		return nil, nil
	}
	if err := in.invoke(m.wd, in.params, m.timeout+time.Second); err != nil {
		m.discard(in)
		return nil, fmt.Errorf("kiln_params: %w", err)
	}
	ptr, n := uint32(in.stack[0]>>32), uint32(in.stack[0])
	b, ok := in.mem.Read(ptr, n)
	if !ok || n > 1<<16 {
		m.discard(in)
		return nil, errors.New("kiln_params: table outside memory or too large")
	}
	ps, err := abi.DecodeParams(b)
	m.put(in)
	return ps, err
}
