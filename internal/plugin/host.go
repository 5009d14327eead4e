package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-gpu/kiln/internal/clock"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// ErrChecksum is wrapped by the error for a binary whose sha256 is not the
// configured one.
var ErrChecksum = errors.New("plugin checksum mismatch")

// ErrClosed is returned by calls on a closed Host.
var ErrClosed = errors.New("plugin host closed")

// Host owns every plugin process of one kiln. Safe for concurrent use.
type Host struct {
	cfg Config
	clk clock.Clock
	log zerolog.Logger

	mu     sync.Mutex
	procs  []*Process
	closed bool
}

// NewHost returns a host; plugins start on first use.
func NewHost(cfg Config, clk clock.Clock, log zerolog.Logger) *Host {
	if clk == nil {
		clk = clock.Real()
	}
	return &Host{cfg: cfg.WithDefaults(), clk: clk, log: log}
}

// Resolve finds a plugin binary: a path with a slash is used as is; a bare
// name is looked up in Config.Dir, next to the kiln executable, then on PATH.
func (h *Host) Resolve(binary string) (string, error) {
	if strings.ContainsRune(binary, '/') {
		return filepath.Abs(binary)
	}
	var dirs []string
	if h.cfg.Dir != "" {
		dirs = append(dirs, h.cfg.Dir)
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range dirs {
		p := filepath.Join(d, binary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return filepath.Abs(p)
		}
	}
	p, err := exec.LookPath(binary)
	if err != nil {
		return "", fmt.Errorf("plugin %s: not in %v nor on PATH: %w", binary, dirs, err)
	}
	return filepath.Abs(p)
}

// Storage returns a supervised storage plugin. options become the plugin's
// environment as KILN_PLUGIN_<UPPER(key)>=value.
func (h *Host) Storage(name, binary string, options map[string]string) (*Storage, error) {
	p, err := h.add(name, binary, sdk.KindStorage, options)
	if err != nil {
		return nil, err
	}
	return &Storage{p: p}, nil
}

// Loader returns a supervised loader plugin.
func (h *Host) Loader(name, binary string, options map[string]string) (*Loader, error) {
	p, err := h.add(name, binary, sdk.KindLoader, options)
	if err != nil {
		return nil, err
	}
	return &Loader{p: p}, nil
}

func (h *Host) add(name, binary, kind string, options map[string]string) (*Process, error) {
	path, err := h.Resolve(binary)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(path)
	want, ok := h.cfg.SHA256[base]
	if !ok {
		if h.cfg.RequireSHA256 {
			return nil, fmt.Errorf("plugin %s: %s has no plugins.sha256 entry and require_sha256 is set: %w", name, base, ErrChecksum)
		}
		if want, err = fileSHA256(path); err != nil {
			return nil, fmt.Errorf("plugin %s: %w", name, err)
		}
		h.log.Warn().Str("plugin", name).Str("binary", path).Str("sha256", want).
			Msg("no configured checksum; pinning the digest seen now")
	}
	sum, err := hex.DecodeString(want)
	if err != nil || len(sum) != 32 {
		return nil, fmt.Errorf("plugin %s: bad sha256 %q", name, want)
	}
	env := make([]string, 0, len(options)+1)
	keys := make([]string, 0, len(options))
	for k := range options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, "KILN_PLUGIN_"+strings.ToUpper(k)+"="+options[k])
	}
	// A plugin may need a temp dir; nothing else of kiln's environment.
	env = append(env, "TMPDIR="+os.TempDir())
	p := &Process{h: h, name: name, kind: kind, path: path, sum: sum, env: env,
		log: h.log.With().Str("plugin", name).Logger()}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	h.procs = append(h.procs, p)
	return p, nil
}

// Processes lists the host's plugins.
func (h *Host) Processes() []*Process {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Process(nil), h.procs...)
}

// Close kills every plugin and refuses new calls.
func (h *Host) Close() {
	h.mu.Lock()
	h.closed = true
	procs := h.procs
	h.mu.Unlock()
	for _, p := range procs {
		p.close()
	}
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(d.Sum(nil)), nil
}

// Process is one supervised plugin process.
type Process struct {
	h    *Host
	name string
	kind string
	path string
	sum  []byte
	env  []string
	log  zerolog.Logger

	mu       sync.Mutex
	client   *goplugin.Client
	impl     any
	starts   int
	failures int // consecutive deaths or failed starts
	closed   bool
}

// Name is the plugin's configured name.
func (p *Process) Name() string { return p.name }

// Path is the plugin's binary.
func (p *Process) Path() string { return p.path }

// Restarts counts starts after the first.
func (p *Process) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(0, p.starts-1)
}

// PID is the running process's id, or 0.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil || p.client.Exited() {
		return 0
	}
	if rc := p.client.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Start starts the plugin if it is not running; it is what every call does
// first, exposed so that a misconfigured plugin fails at kiln's start.
func (p *Process) Start(ctx context.Context) error {
	_, err := p.get(ctx)
	return err
}

func (p *Process) get(ctx context.Context) (any, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if p.client != nil && !p.client.Exited() {
		return p.impl, nil
	}
	if p.client != nil {
		p.client.Kill()
		p.client = nil
	}
	if p.failures > 0 {
		d := p.h.cfg.RestartBackoffMin << min(p.failures-1, 16)
		d = min(d, p.h.cfg.RestartBackoffMax)
		p.log.Warn().Dur("backoff", d).Int("failures", p.failures).Msg("restarting plugin")
		if err := p.h.clk.Sleep(ctx, d); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(p.path)
	cmd.Env = append([]string(nil), p.env...)
	cmd.SysProcAttr = sysProcAttr()
	c := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          sdk.PluginMap(),
		Cmd:              cmd,
		SecureConfig:     &goplugin.SecureConfig{Checksum: p.sum, Hash: sha256.New()},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		SkipHostEnv:      true,
		Managed:          true,
		StartTimeout:     p.h.cfg.StartTimeout,
		Logger:           hclogFor(p.log),
		// Match the plugin side's flow-control windows (sdk/plugin): model
		// bytes stream through these connections.
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithInitialWindowSize(sdk.StreamWindow), grpc.WithInitialConnWindowSize(sdk.StreamWindow),
			grpc.WithReadBufferSize(256 << 10), grpc.WithWriteBufferSize(256 << 10),
		},
	})
	rpc, err := c.Client()
	if err != nil {
		c.Kill()
		p.failures++
		if errors.Is(err, goplugin.ErrChecksumsDoNotMatch) {
			return nil, fmt.Errorf("plugin %s: %s: %w", p.name, p.path, ErrChecksum)
		}
		return nil, fmt.Errorf("plugin %s: start %s: %w", p.name, p.path, err)
	}
	impl, err := rpc.Dispense(p.kind)
	if err != nil {
		c.Kill()
		p.failures++
		return nil, fmt.Errorf("plugin %s: dispense %s: %w", p.name, p.kind, err)
	}
	p.client, p.impl = c, impl
	p.starts++
	p.log.Info().Str("binary", p.path).Int("starts", p.starts).Msg("plugin started")
	return impl, nil
}

// dead reports whether err means the process is gone, and if so forgets it.
func (p *Process) dead(err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	gone := p.client != nil && p.client.Exited()
	if st, ok := status.FromError(errors.Unwrap(err)); ok && st.Code() == codes.Unavailable {
		gone = true
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus().Code() == codes.Unavailable {
		gone = true
	}
	if gone {
		p.failures++
		if p.client != nil {
			p.client.Kill()
			p.client = nil
		}
	}
	return gone
}

func (p *Process) ok() {
	p.mu.Lock()
	p.failures = 0
	p.mu.Unlock()
}

// call runs fn on the plugin, restarting it and retrying when it died.
func (p *Process) call(ctx context.Context, fn func(impl any) error) error {
	var err error
	for attempt := 0; attempt <= p.h.cfg.MaxRetries; attempt++ {
		var impl any
		impl, err = p.get(ctx)
		if err != nil {
			if errors.Is(err, ErrChecksum) || errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return err
			}
			continue
		}
		err = fn(impl)
		if err == nil {
			p.ok()
			return nil
		}
		if ctx.Err() != nil || !p.dead(err) {
			return err
		}
		p.log.Warn().Err(err).Int("attempt", attempt+1).Msg("plugin died during a call; retrying after restart")
	}
	return fmt.Errorf("plugin %s: gave up after %d attempts: %w", p.name, p.h.cfg.MaxRetries+1, err)
}

func (p *Process) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.client != nil {
		p.client.Kill()
		p.client = nil
	}
}

// Kill kills the running process without closing the supervisor, as a crash
// would; the next call restarts it. For tests and chaos drills.
func (p *Process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		if rc := p.client.ReattachConfig(); rc != nil {
			if pr, err := os.FindProcess(rc.Pid); err == nil {
				_ = pr.Kill()
			}
		}
	}
}

// hclogFor relays go-plugin's log (and the plugin's stderr) into zerolog.
func hclogFor(log zerolog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name: "plugin", Level: hclog.Info, Output: logWriter{log}, DisableTime: true,
	})
}

type logWriter struct{ log zerolog.Logger }

func (w logWriter) Write(b []byte) (int, error) {
	w.log.Debug().Msg(strings.TrimSpace(string(b)))
	return len(b), nil
}
