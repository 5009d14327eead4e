package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/kiln-gpu/kiln/internal/clock"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Sources of a policy version.
const (
	SourceWASM    = "wasm"    // loaded through the API or CLI
	SourceBuiltin = "builtin" // a built-in, from its embedded WASM build
	SourceNative  = "native"  // a built-in, from its native build
)

// ErrNotFound is wrapped by errors about unknown policies or versions.
var ErrNotFound = errors.New("policy not found")

// Host runs the active policy of each kind, keeps the versions loaded
// before for rollback, and counts faults. It is safe for concurrent use.
type Host struct {
	cfg   Config
	log   zerolog.Logger
	clk   clock.Clock
	rt    wazero.Runtime
	cache wazero.CompilationCache
	fsys  fs.FS
	wd    *watchdog

	latency *decisionLatency

	compiledMu sync.Mutex
	compiled   map[[32]byte]wazero.CompiledModule // by SHA-256 of the module as loaded

	mu    sync.Mutex // serialises loads, swaps and the change log
	slots map[abi.Kind]*slot
	// restoring is true until the saved state is restored: saving before
	// then would overwrite it with the configured defaults.
	restoring bool

	ctx    context.Context
	cancel context.CancelFunc
	// startup counts the goroutines started with the host (the built-ins'
	// WASM upgrades, the restore); ready closes when they are done.
	// WaitReady waits on ready, never on a WaitGroup: an Add on a
	// WaitGroup whose Wait is under way panics ("WaitGroup misuse"), and
	// loads add background work at any time.
	startup sync.WaitGroup
	ready   chan struct{}
	// bg counts every background goroutine, for Close. bgMu and closed
	// keep Add and Wait apart: nothing is added once Close has begun.
	bgMu   sync.Mutex
	closed bool
	bg     sync.WaitGroup

	// inUse says whether something outside the host (an experiment)
	// needs a version; Unload asks it. Guarded by mu.
	inUse InUseFunc

	// sampleSeed draws the seed of a load's random self-test inputs; a
	// fixed one in Check, so that a failure replays.
	sampleSeed func() uint64

	logBudget atomic.Int64 // guest log lines left in this second
	logSecond atomic.Int64

	sched Scheduler
	bal   Balancer
	evict Evictor
	batch Batcher
	route Router
}

// slot is one kind's state.
type slot struct {
	kind     abi.Kind
	active   atomic.Pointer[version]
	versions []*version
	previous []*version // previously active, most recent last
	changes  []Change
	faults   []time.Time // recent faults of the active version
	slotCounters
}

// version is one loaded policy.
type version struct {
	name     string
	number   int
	kind     abi.Kind
	source   string
	sha      string
	loadedAt time.Time
	mod      *module
	native   any
	params   []abi.Param
	values   atomic.Pointer[[]float64]

	calls    atomic.Int64
	faults   atomic.Int64
	faultsBy [len(faultReasons)]atomic.Int64

	stateMu sync.Mutex
	state   [4]uint64
}

func (v *version) ref() string { return fmt.Sprintf("%s@%d", v.name, v.number) }

// setNumber numbers a version not yet registered, and names its module's
// guest log lines after it.
func (v *version) setNumber(n int) {
	v.number = n
	if v.mod != nil {
		v.mod.setLabel(v.kind, v.ref())
	}
}

// Change records one swap of a kind's active policy.
type Change struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Action string    `json:"action"` // start | activate | rollback | auto-rollback
	Reason string    `json:"reason,omitempty"`
}

// NewHost builds the WASM runtime and activates the configured built-ins.
// Built-ins with an embedded WASM build are compiled in the background;
// until a module is ready its native build (the same source) answers, so a
// node starts at once. Close releases everything.
func NewHost(cfg Config, log zerolog.Logger, clk clock.Clock) (*Host, error) {
	return newHost(cfg, log, clk, BuiltinFS())
}

func newHost(cfg Config, log zerolog.Logger, clk clock.Clock, fsys fs.FS) (*Host, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clk == nil {
		clk = clock.Real()
	}
	h := &Host{cfg: cfg, log: log, clk: clk, fsys: fsys, slots: map[abi.Kind]*slot{}, latency: newDecisionLatency(),
		compiled: map[[32]byte]wazero.CompiledModule{}}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	var err error
	if cfg.CacheDir != "" {
		h.cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("policy compilation cache %s: %w", cfg.CacheDir, err)
		}
	} else {
		h.cache = wazero.NewCompilationCache()
	}
	// No WithCloseOnContextDone: the watchdog and the instrumented loop
	// checks are the deadline (see instrument).
	rc := wazero.NewRuntimeConfig().
		WithMemoryLimitPages(uint32(cfg.MemoryLimitMiB) * 16).WithCompilationCache(h.cache)
	h.rt = wazero.NewRuntimeWithConfig(h.ctx, rc)
	h.wd = newWatchdog(cfg.CallTimeout / 2)
	if err := h.instantiateHostModules(); err != nil {
		h.Close()
		return nil, err
	}
	h.sched = Scheduler{h: h}
	h.bal = Balancer{h: h}
	h.evict = Evictor{h: h, tags: map[entryKey]uint64{}}
	h.batch = Batcher{h: h}
	h.route = Router{h: h}
	for _, k := range abi.Kinds {
		s := &slot{kind: k}
		h.slots[k] = s
		name := cfg.builtin(k)
		v := h.nativeVersion(k, name)
		s.versions = append(s.versions, v)
		s.active.Store(v)
		s.changes = append(s.changes, Change{Time: clk.Now(), Kind: k.String(), To: v.ref(), Action: "start", Reason: "configured"})
		if cfg.NativeBuiltins {
			continue
		}
		wasm, err := fs.ReadFile(fsys, BuiltinFile(k, name))
		if err != nil {
			h.log.Info().Str("policy", k.String()+"."+name).Msg("built-in policy has no WASM build in this binary; serving its native build")
			continue
		}
		h.startup.Add(1)
		h.background(func() {
			defer h.startup.Done()
			h.upgradeBuiltin(k, name, wasm)
		})
	}
	if cfg.StateDir != "" {
		h.restoring = true
		h.startup.Add(1)
		h.background(func() {
			defer h.startup.Done()
			h.restore()
		})
	}
	h.ready = make(chan struct{})
	go func() {
		h.startup.Wait()
		close(h.ready)
	}()
	return h, nil
}

// background runs f on its own goroutine unless the host is closing.
func (h *Host) background(f func()) {
	h.bgMu.Lock()
	defer h.bgMu.Unlock()
	if h.closed {
		return
	}
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		f()
	}()
}

// WaitReady waits until the built-ins' WASM builds compiled at start are
// active (or failed) and the saved state is restored, or ctx ends.
func (h *Host) WaitReady(ctx context.Context) error {
	select {
	case <-h.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// upgradeBuiltin swaps a native built-in for its WASM build once compiled.
func (h *Host) upgradeBuiltin(k abi.Kind, name string, wasm []byte) {
	v, err := h.prepare(h.ctx, k, name, SourceBuiltin, wasm)
	if err != nil {
		if h.ctx.Err() == nil {
			h.log.Error().Err(err).Str("policy", k.String()+"."+name).Msg("built-in WASM build failed; its native build keeps serving")
		}
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.slots[k]
	cur := s.active.Load()
	if cur.source != SourceNative || cur.name != name {
		v.close() // an operator chose another policy meanwhile
		return
	}
	v.setNumber(cur.number)
	s.versions[slices.Index(s.versions, cur)] = v
	s.active.Store(v)
	h.log.Debug().Str("policy", k.String()+"."+name).Msg("built-in policy now runs as WASM")
}

func (h *Host) nativeVersion(k abi.Kind, name string) *version {
	p := Builtin(k, name)
	v := &version{name: name, number: 1, kind: k, source: SourceNative, native: p, loadedAt: h.clk.Now()}
	if d, ok := p.(abi.ParamDeclarer); ok {
		v.params = d.Params()
	}
	v.setDefaults()
	return v
}

func (v *version) setDefaults() {
	vals := make([]float64, len(v.params))
	for i, p := range v.params {
		vals[i] = p.Default
	}
	v.values.Store(&vals)
}

func (v *version) close() {
	if v.mod != nil {
		v.mod.close()
	}
}

func (h *Host) instantiateHostModules() error {
	if _, err := wasi_snapshot_preview1.Instantiate(h.ctx, h.rt); err != nil {
		return fmt.Errorf("policy host: wasi: %w", err)
	}
	_, err := h.rt.NewHostModuleBuilder("kiln").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(h.hostLog), []api.ValueType{i32, i32, i32}, nil).Export("log").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostParam), []api.ValueType{i32, i32}, []api.ValueType{f64}).Export("param").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostNow), nil, []api.ValueType{i64}).Export("now_ns").
		Instantiate(h.ctx)
	if err != nil {
		return fmt.Errorf("policy host: kiln module: %w", err)
	}
	_, err = h.rt.NewHostModuleBuilder("env").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostAbort), []api.ValueType{i32, i32, i32, i32}, nil).Export("abort").
		Instantiate(h.ctx)
	if err != nil {
		return fmt.Errorf("policy host: env module: %w", err)
	}
	return nil
}

// hostLog is kiln.log(level, ptr, len): at most 20 lines a second, 512
// bytes each, all guests together.
func (h *Host) hostLog(ctx context.Context, m api.Module, stack []uint64) {
	level, ptr, n := uint32(stack[0]), uint32(stack[1]), uint32(stack[2])
	sec := h.clk.Now().Unix()
	if h.logSecond.Swap(sec) != sec {
		h.logBudget.Store(20)
	}
	if h.logBudget.Add(-1) < 0 {
		return
	}
	b, ok := m.Memory().Read(ptr, min(n, 512))
	if !ok {
		return
	}
	ev := h.log.Info()
	switch level {
	case abi.LevelDebug:
		ev = h.log.Debug()
	case abi.LevelWarn:
		ev = h.log.Warn()
	case abi.LevelError:
		ev = h.log.Error()
	}
	// The policy's name and version: with several loaded, a line that
	// does not say whose it is cannot be acted on.
	label := "unknown"
	if mod, _ := ctx.Value(moduleKey{}).(*module); mod != nil {
		if l := mod.label.Load(); l != nil {
			label = *l
		}
	}
	ev.Str("policy", label).Str("guest", string(b)).Msg("policy log")
}

func hostParam(ctx context.Context, m api.Module, stack []uint64) {
	ci, _ := ctx.Value(callCtxKey{}).(*callInfo)
	name, ok := m.Memory().Read(uint32(stack[0]), min(uint32(stack[1]), 64))
	stack[0] = api.EncodeF64(0)
	if ci == nil || !ok {
		return
	}
	for i, p := range ci.params {
		if p.Name == string(name) && i < len(ci.values) {
			stack[0] = api.EncodeF64(ci.values[i])
		}
	}
}

func hostNow(ctx context.Context, _ api.Module, stack []uint64) {
	if ci, _ := ctx.Value(callCtxKey{}).(*callInfo); ci != nil {
		stack[0] = uint64(ci.now)
		return
	}
	stack[0] = 0
}

// hostAbort is AssemblyScript's env.abort: it ends the call with a trap.
func hostAbort(ctx context.Context, m api.Module, _ []uint64) {
	panic(sys.NewExitError(255))
}

// prepare compiles, validates, instantiates and self-tests a module,
// returning a version not yet registered.
func (h *Host) prepare(ctx context.Context, k abi.Kind, name, source string, wasm []byte) (*version, error) {
	sum := sha256.Sum256(wasm)
	cm, cached, err := h.compile(ctx, sum, wasm)
	if err != nil {
		return nil, err
	}
	minor, err := validate(cm, k)
	if err != nil {
		if !cached {
			_ = cm.Close(ctx)
		}
		return nil, err
	}
	v := &version{name: name, kind: k, source: source, sha: hex.EncodeToString(sum[:]), loadedAt: h.clk.Now(),
		mod: &module{rt: h.rt, compiled: cm, kind: k, minor: minor, timeout: h.cfg.CallTimeout, wd: h.wd, pool: instancePool{max: h.cfg.PoolSize}}}
	// Until it has a number (Load gives it one), its log lines say "new".
	v.mod.setLabel(k, name+"@new")
	fail := func(err error) (*version, error) {
		v.close()
		if !cached {
			_ = cm.Close(ctx)
		}
		return nil, err
	}
	if err := v.mod.warm(ctx, 1); err != nil {
		return fail(err)
	}
	if v.params, err = v.mod.readParams(ctx); err != nil {
		return fail(err)
	}
	v.setDefaults()
	if err := h.selfTest(v); err != nil {
		return fail(fmt.Errorf("self-test: %w", err))
	}
	// Then inputs no module can know in advance (samples.go).
	seed := rand.Uint64() % 1e9 // short enough to type into kiln policy test
	if h.sampleSeed != nil {
		seed = h.sampleSeed()
	}
	if _, err := h.runTrace(ctx, v, seed, LoadSamples, selfTestLimit(h.cfg.CallTimeout)); err != nil {
		return fail(fmt.Errorf("self-test: %w", err))
	}
	v.state, v.calls = [4]uint64{}, atomic.Int64{}
	if !cached {
		h.compiledMu.Lock()
		if _, ok := h.compiled[sum]; !ok {
			h.compiled[sum] = cm
		}
		h.compiledMu.Unlock()
	}
	// The self-test's instance is warm; the rest of the pool fills in the
	// background (instantiating a Go guest runs its runtime's init, a few
	// ms each), so that a swap waits for one instance only.
	h.background(func() { _ = v.mod.warm(h.ctx, h.cfg.PoolSize-1) })
	return v, nil
}

// compile returns the compiled module of wasm, whose SHA-256 is sum, and
// whether it came from the host's own cache of modules that passed a
// self-test before. wazero's compilation cache spares the compiler but not
// the decoding and validation of every function, which is most of a Go
// module's load time once its compilation is cached; a module this host
// has already loaded (reloaded, activated again, restored) skips them.
func (h *Host) compile(ctx context.Context, sum [32]byte, wasm []byte) (wazero.CompiledModule, bool, error) {
	h.compiledMu.Lock()
	cm, ok := h.compiled[sum]
	h.compiledMu.Unlock()
	if ok {
		return cm, true, nil
	}
	if err := checkReservedExports(wasm); err != nil {
		return nil, false, err
	}
	code, err := h.instrumented(sum, wasm)
	if err != nil {
		return nil, false, fmt.Errorf("read module: %w", err)
	}
	cm, err = h.rt.CompileModule(ctx, code)
	if err != nil {
		return nil, false, fmt.Errorf("compile: %w", err)
	}
	return cm, false, nil
}

// VersionInfo describes one loaded policy version.
type VersionInfo struct {
	Name     string    `json:"name"`
	Version  int       `json:"version"`
	Kind     string    `json:"kind"`
	Source   string    `json:"source"`
	SHA256   string    `json:"sha256,omitempty"`
	LoadedAt time.Time `json:"loaded_at"`
	Active   bool      `json:"active"`
	Calls    int64     `json:"calls"`
	Faults   int64     `json:"faults"`
	// FaultsBy splits Faults by reason (trap, timeout, invalid,
	// error_status, stall); reasons with none are left out.
	FaultsBy map[string]int64   `json:"faults_by,omitempty"`
	Params   map[string]float64 `json:"params,omitempty"`
	// Instances is how many WASM instances are alive (pooled or in use).
	Instances int64 `json:"instances"`
	// Reused is set in a load's answer when the module's bytes were
	// already loaded as this version: identical bytes are one version.
	Reused bool `json:"reused,omitempty"`
}

// KindInfo describes one kind: its active policy, versions and history.
type KindInfo struct {
	Kind     string        `json:"kind"`
	Active   string        `json:"active"`
	Versions []VersionInfo `json:"versions"`
	// Builtins are the built-in policies of this kind, loaded or not.
	Builtins []string `json:"builtins"`
	Changes  []Change `json:"changes"`
}

func (v *version) info(active bool) VersionInfo {
	vi := VersionInfo{Name: v.name, Version: v.number, Kind: v.kind.String(), Source: v.source, SHA256: v.sha,
		LoadedAt: v.loadedAt, Active: active, Calls: v.calls.Load(), Faults: v.faults.Load()}
	for i, r := range faultReasons {
		if n := v.faultsBy[i].Load(); n > 0 {
			if vi.FaultsBy == nil {
				vi.FaultsBy = map[string]int64{}
			}
			vi.FaultsBy[r] = n
		}
	}
	if vals := *v.values.Load(); len(v.params) > 0 {
		vi.Params = map[string]float64{}
		for i, p := range v.params {
			vi.Params[p.Name] = vals[i]
		}
	}
	if v.mod != nil {
		vi.Instances = v.mod.live.Load()
	}
	return vi
}

// List describes every kind, in ABI order.
func (h *Host) List() []KindInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []KindInfo
	for _, k := range abi.Kinds {
		s := h.slots[k]
		act := s.active.Load()
		ki := KindInfo{Kind: k.String(), Active: act.ref(), Builtins: BuiltinNames(k), Changes: slices.Clone(s.changes)}
		for _, v := range s.versions {
			ki.Versions = append(ki.Versions, v.info(v == act))
		}
		out = append(out, ki)
	}
	return out
}

// Load compiles, validates and self-tests a module for kind k under name,
// and registers it as the name's next version. With activate it then swaps
// it in. Nothing changes when any step fails.
//
// Identical bytes are the same version: a module whose SHA-256 matches a
// version of kind k already loaded (under any name) is not loaded again;
// Load returns that version, with Reused set, and activates it if asked.
func (h *Host) Load(ctx context.Context, k abi.Kind, name string, wasm []byte, activate bool, reason string) (VersionInfo, error) {
	s, ok := h.slots[k]
	if !ok {
		return VersionInfo{}, fmt.Errorf("load policy: unknown kind %d", k)
	}
	if err := checkName(name); err != nil {
		return VersionInfo{}, err
	}
	sum := sha256.Sum256(wasm)
	if vi, ok := h.reuse(s, hex.EncodeToString(sum[:]), activate, reason); ok {
		return vi, nil
	}
	v, err := h.prepare(ctx, k, name, SourceWASM, wasm)
	if err != nil {
		return VersionInfo{}, fmt.Errorf("load %s policy %s: %w", k, name, err)
	}
	if err := h.saveModule(v.sha, wasm); err != nil {
		v.close()
		return VersionInfo{}, fmt.Errorf("load %s policy %s: keep the module in %s: %w", k, name, h.cfg.StateDir, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if o := findSHA(s, v.sha); o != nil {
		// The same bytes were loaded meanwhile: keep the first.
		v.close()
		v = o
	} else {
		n := 0
		for _, o := range s.versions {
			if o.name == name {
				n = max(n, o.number)
			}
		}
		v.setNumber(n + 1)
		s.versions = append(s.versions, v)
	}
	if activate {
		h.swap(s, v, "activate", reason)
	}
	h.persistLocked()
	vi := v.info(s.active.Load() == v)
	return vi, nil
}

// reuse answers a Load of bytes already loaded as a version of slot s.
func (h *Host) reuse(s *slot, sha string, activate bool, reason string) (VersionInfo, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := findSHA(s, sha)
	if v == nil {
		return VersionInfo{}, false
	}
	if activate {
		h.swap(s, v, "activate", reason)
		h.persistLocked()
	}
	vi := v.info(s.active.Load() == v)
	vi.Reused = true
	return vi, true
}

// findSHA returns slot s's version loaded from bytes whose SHA-256 is sha.
func findSHA(s *slot, sha string) *version {
	for _, v := range s.versions {
		if v.source == SourceWASM && v.sha == sha {
			return v
		}
	}
	return nil
}

func checkName(name string) error {
	if name == "" || len(name) > 64 {
		return errors.New("policy name must be 1 to 64 characters")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("policy name %q may hold only a-z, 0-9, '-', '_' and '.'", name)
		}
	}
	return nil
}

// maxChanges bounds each kind's change log.
const maxChanges = 200

// swap makes v active; h.mu is held. The caller persists.
func (h *Host) swap(s *slot, v *version, action, reason string) {
	old := s.active.Load()
	if old == v {
		return
	}
	if action != "rollback" && action != "auto-rollback" {
		s.previous = append(s.previous, old)
	}
	s.active.Store(v)
	s.faults = nil
	s.swaps.Add(1)
	switch action {
	case "rollback":
		s.rollbacks.Add(1)
	case "auto-rollback":
		s.autoRollbacks.Add(1)
	}
	s.changes = append(s.changes, Change{Time: h.clk.Now(), Kind: s.kind.String(), From: old.ref(), To: v.ref(), Action: action, Reason: reason})
	if len(s.changes) > maxChanges {
		s.changes = slices.Delete(s.changes, 0, len(s.changes)-maxChanges)
	}
	h.log.Info().Str("kind", s.kind.String()).Str("from", old.ref()).Str("to", v.ref()).Str("action", action).Str("reason", reason).Msg("policy swapped")
	h.swapped(s, old, v, action, reason) // watch_hook.go
}

// findOrLoadBuiltin returns name@number of slot s (number 0: the newest).
// A built-in that is not loaded yet is loaded (its WASM build when this
// binary has one), but not activated.
func (h *Host) findOrLoadBuiltin(ctx context.Context, s *slot, name string, number int) (*version, error) {
	k := s.kind
	h.mu.Lock()
	v := find(s, name, number)
	h.mu.Unlock()
	if v == nil && number <= 1 && Builtin(k, name) != nil {
		nv := h.nativeVersion(k, name)
		if wasm, err := fs.ReadFile(h.fsys, BuiltinFile(k, name)); err == nil && !h.cfg.NativeBuiltins {
			wv, err := h.prepare(ctx, k, name, SourceBuiltin, wasm)
			if err != nil {
				return nil, fmt.Errorf("load built-in %s policy %s: %w", k, name, err)
			}
			wv.setNumber(1)
			nv = wv
		}
		h.mu.Lock()
		if v = find(s, name, number); v == nil {
			v = nv
			s.versions = append(s.versions, v)
		} else {
			nv.close()
		}
		h.mu.Unlock()
	}
	if v == nil {
		return nil, fmt.Errorf("%s policy %s@%d: %w", k, name, number, ErrNotFound)
	}
	return v, nil
}

// Activate makes name@number (number 0: the newest) the active policy of
// kind k. A built-in name not loaded yet is loaded first. The old version
// stays loaded and warm for rollback; decisions in flight finish on it.
func (h *Host) Activate(ctx context.Context, k abi.Kind, name string, number int, reason string) (VersionInfo, error) {
	s, ok := h.slots[k]
	if !ok {
		return VersionInfo{}, fmt.Errorf("activate: unknown kind %d", k)
	}
	v, err := h.findOrLoadBuiltin(ctx, s, name, number)
	if err != nil {
		return VersionInfo{}, fmt.Errorf("activate: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.swap(s, v, "activate", reason)
	h.persistLocked()
	return v.info(true), nil
}

func find(s *slot, name string, number int) *version {
	var best *version
	for _, v := range s.versions {
		if v.name == name && (number == 0 && (best == nil || v.number > best.number) || v.number == number) {
			best = v
		}
	}
	return best
}

// Rollback makes the previously active policy of kind k active again.
func (h *Host) Rollback(k abi.Kind, reason string) (VersionInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.slots[k]
	if !ok {
		return VersionInfo{}, fmt.Errorf("rollback: unknown kind %d", k)
	}
	if len(s.previous) == 0 {
		return VersionInfo{}, fmt.Errorf("rollback %s: no previous policy: %w", k, ErrNotFound)
	}
	prev := s.previous[len(s.previous)-1]
	s.previous = s.previous[:len(s.previous)-1]
	h.swap(s, prev, "rollback", reason)
	h.persistLocked()
	return prev.info(true), nil
}

// SetParam sets a tunable parameter of kind k's active policy, within the
// type and bounds the policy declares. It is SetParams with one value.
func (h *Host) SetParam(k abi.Kind, name string, value float64) error {
	return h.SetParams(k, map[string]float64{name: value})
}

// SetParams sets several tunable parameters of kind k's active policy at
// once: every value is checked against the type and bounds its parameter
// declares (an int takes whole numbers, a bool 0 or 1) before any is
// applied, and decisions see either none of the new values or all of them.
// An unknown name is an error wrapping ErrUnknownParam that lists the
// declared parameters.
func (h *Host) SetParams(k abi.Kind, set map[string]float64) error {
	s, ok := h.slots[k]
	if !ok {
		return fmt.Errorf("set params: unknown kind %d", k)
	}
	if len(set) == 0 {
		return errors.New("set params: no values given")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v := s.active.Load()
	vals, err := v.withParams(set)
	if err != nil {
		return fmt.Errorf("set params: %w", err)
	}
	h.paramsSet(s, v, vals) // watch_hook.go
	v.values.Store(&vals)
	h.persistLocked()
	return nil
}

// fault counts a failed decision of v and rolls its kind back when v, still
// active, has failed MaxFaults times within FaultWindow.
func (h *Host) fault(v *version, err error) {
	v.faults.Add(1)
	v.faultsBy[faultIndex(err)].Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.slots[v.kind]
	if s.active.Load() != v {
		return
	}
	now := h.clk.Now()
	s.faults = append(s.faults, now)
	for len(s.faults) > 0 && now.Sub(s.faults[0]) > h.cfg.FaultWindow {
		s.faults = s.faults[1:]
	}
	h.log.Warn().Err(err).Str("policy", v.kind.String()+"."+v.ref()).Int("recent_faults", len(s.faults)).Msg("policy fault; answered with the native fallback")
	if len(s.faults) >= h.cfg.MaxFaults && len(s.previous) > 0 {
		prev := s.previous[len(s.previous)-1]
		s.previous = s.previous[:len(s.previous)-1]
		h.swap(s, prev, "auto-rollback", fmt.Sprintf("%d faults within %s; last: %v", len(s.faults), h.cfg.FaultWindow, err))
		h.persistLocked()
	}
}

// Close stops background compilation and releases every module.
func (h *Host) Close() error {
	h.bgMu.Lock()
	h.closed = true
	h.bgMu.Unlock()
	h.cancel()
	h.bg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.slots {
		for _, v := range s.versions {
			v.close()
		}
	}
	var err error
	if h.rt != nil {
		err = h.rt.Close(context.Background())
	}
	if h.wd != nil {
		h.wd.close()
	}
	if h.cache != nil {
		_ = h.cache.Close(context.Background())
	}
	return err
}

// Scheduler returns the decision.Scheduler that asks the active scheduling
// policy.
func (h *Host) Scheduler() *Scheduler { return &h.sched }

// Balancer returns the decision.Balancer that asks the active balancing
// policy.
func (h *Host) Balancer() *Balancer { return &h.bal }

// Evictor returns the decision.Evictor that asks the active eviction policy.
func (h *Host) Evictor() *Evictor { return &h.evict }

// Batcher returns the decision.Batcher that asks the active batching policy.
func (h *Host) Batcher() *Batcher { return &h.batch }
