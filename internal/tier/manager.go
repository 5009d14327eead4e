package tier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/l4"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// ErrCorrupt is wrapped when bytes do not match their size or sha256.
var ErrCorrupt = errors.New("model bytes do not verify")

// Resolver maps a model id to where its bytes live in L4; the catalog
// implements it (the node hands the tiers its *catalog.Catalog). The
// location is a leaf's type (l4.Source, which catalog.Source aliases):
// the catalog says where the bytes are, the tiers move them, and neither
// imports the other.
type Resolver interface {
	Resolve(ctx context.Context, id string) (l4.Source, error)
}

// Options are a Manager's collaborators.
type Options struct {
	// DataDir is kiln's data dir; L3 defaults to DataDir/cache/blobs.
	DataDir string
	Clock   clock.Clock
	Log     zerolog.Logger
	// DiskEvictor and RAMEvictor pick the disk and RAM tiers' victims;
	// both are required. The node passes the policy host's (one Evictor
	// per cache, Host.NewEvictor), so that the active eviction policy
	// decides for L3 and L2 as it does for VRAM; the package itself holds
	// no policy.
	DiskEvictor decision.Evictor
	RAMEvictor  decision.Evictor
	// Demand, when set, is the kernel's recent demand for a model as of
	// now (internal/predict.Demand.Of): the entries the evictors see
	// carry it (EntryView.RecentDemand). Nil: every entry reads 0.
	Demand func(now time.Time, model string) float64
}

// Manager runs the L4→L3→L2 tiers. Safe for concurrent use.
type Manager struct {
	res  Resolver
	disk *store
	ram  *store
	clk  clock.Clock
	log  zerolog.Logger

	mu      sync.Mutex
	flights map[string]*flight
	learned map[string]string // model id → sha256 seen on its first fetch
	remote  Stats
	bwSeen  bool
	vram    func() Stats
	// convert is tiers.convert (convert.go).
	convert ConvertConfig
}

type flight struct {
	done chan struct{}
	err  error
}

// New prepares the tier directories: L3 files found there are kept (and
// verified when next read), L2 is emptied.
func New(cfg Config, res Resolver, opts Options) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	if opts.DiskEvictor == nil || opts.RAMEvictor == nil {
		return nil, errors.New("tier: Options.DiskEvictor and RAMEvictor are required (the policy host's Host.NewEvictor, one per tier)")
	}
	diskDir := cfg.Disk.Dir
	if diskDir == "" {
		diskDir = filepath.Join(opts.DataDir, "cache", "blobs")
	}
	ramDir := cfg.RAM.Dir
	if ramDir == "" {
		ramDir = DefaultRAMDir(opts.DataDir)
	}
	// Plugins write into the disk tier by path (FetchTo) and workers map
	// RAM segments by path: both run in their own working directories, so
	// the tiers hand out absolute paths only.
	var err error
	if diskDir, err = filepath.Abs(diskDir); err != nil {
		return nil, fmt.Errorf("tiers.disk.dir: %w", err)
	}
	if ramDir, err = filepath.Abs(ramDir); err != nil {
		return nil, fmt.Errorf("tiers.ram.dir: %w", err)
	}
	m := &Manager{
		res:     res,
		disk:    newStore("disk", diskDir, cfg.Disk.CapacityBytes, cfg.Disk.TargetFill, opts.DiskEvictor, opts.Clock, opts.Log, opts.Demand),
		ram:     newStore("ram", ramDir, cfg.RAM.CapacityBytes, cfg.RAM.TargetFill, opts.RAMEvictor, opts.Clock, opts.Log, opts.Demand),
		clk:     opts.Clock,
		log:     opts.Log,
		flights: map[string]*flight{},
		learned: map[string]string{},
		remote:  Stats{Name: "remote"},
		convert: cfg.Convert,
	}
	if err := os.MkdirAll(diskDir, 0o755); err != nil {
		return nil, fmt.Errorf("tier disk: %w", err)
	}
	if err := os.RemoveAll(ramDir); err != nil {
		return nil, fmt.Errorf("tier ram: clear %s: %w", ramDir, err)
	}
	if err := os.MkdirAll(ramDir, 0o755); err != nil {
		return nil, fmt.Errorf("tier ram: %w", err)
	}
	if err := m.adoptDisk(); err != nil {
		return nil, err
	}
	return m, nil
}

// DefaultRAMDir is L2's directory for a data dir: on /dev/shm when there is
// one, named kiln-<uid>-<hash> so that two kilns on one host never share it.
func DefaultRAMDir(dataDir string) string {
	abs, _ := filepath.Abs(dataDir)
	h := fnv.New32a()
	h.Write([]byte(abs))
	base := "/dev/shm"
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		base = os.TempDir()
	}
	return filepath.Join(base, fmt.Sprintf("kiln-%d-%08x", os.Getuid(), h.Sum32()))
}

func (m *Manager) adoptDisk() error {
	des, err := os.ReadDir(m.disk.dir)
	if err != nil {
		return fmt.Errorf("tier disk: %w", err)
	}
	for _, de := range des {
		p := filepath.Join(m.disk.dir, de.Name())
		info, err := de.Info()
		if err != nil || !info.Mode().IsRegular() || !isSum(de.Name()) || !m.disk.adopt(de.Name(), info.Size(), info.ModTime()) {
			_ = os.Remove(p) // temp files of a crashed fetch, strays, overflow
		}
	}
	return nil
}

func isSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// SetVRAMStats gives Stats the dispatcher's view of L1.
func (m *Manager) SetVRAMStats(f func() Stats) {
	m.mu.Lock()
	m.vram = f
	m.mu.Unlock()
}

// DiskDir is where L3 files live.
func (m *Manager) DiskDir() string { return m.disk.dir }

// Close removes the L2 segments (L3 stays for the next start).
func (m *Manager) Close() error { return os.RemoveAll(m.ram.dir) }

// Lease pins a model's L2 segment until Release.
type Lease struct {
	m     *Manager
	e     *entry
	model string
	once  sync.Once
}

// Path is the segment's file: map it read-only (it is mode 0444).
func (l *Lease) Path() string { return l.m.ram.path(l.e.sum) }

// Bytes is the segment's size.
func (l *Lease) Bytes() int64 { return l.e.size }

// SHA256 is the verified digest of the segment's bytes.
func (l *Lease) SHA256() string { return l.e.sum }

// Model is the model id the lease was taken for.
func (l *Lease) Model() string { return l.model }

// Release unpins the segment; calling it again does nothing.
func (l *Lease) Release() { l.once.Do(func() { l.m.ram.unpin(l.e) }) }

func (m *Manager) sumOf(id string, src l4.Source) string {
	if src.SHA256 != "" {
		return src.SHA256
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.learned[id]
}

// Acquire makes model id resident in L2 and pins it. Concurrent calls for
// one model share one transfer per tier.
func (m *Manager) Acquire(ctx context.Context, id string) (*Lease, error) {
	src, err := m.res.Resolve(ctx, id)
	if err != nil {
		return nil, err
	}
	counted := false
	for attempt := 0; attempt < 4; attempt++ {
		if sum := m.sumOf(id, src); sum != "" {
			if e := m.ram.get(sum, !counted); e != nil {
				m.ram.readOut(e.size)
				return &Lease{m: m, e: e, model: id}, nil
			}
			counted = true
		} else if !counted {
			m.ram.miss()
			counted = true
		}
		err = m.once(ctx, "ram:"+id, func(ctx context.Context) error { return m.promoteL2(ctx, id, src) })
		if err != nil {
			return nil, fmt.Errorf("tier: acquire %s: %w", id, err)
		}
	}
	return nil, fmt.Errorf("tier: acquire %s: evicted as soon as it was promoted: %w", id, ErrNoRoom)
}

// Prefetch climbs every model toward L2 without pinning it, in parallel, and
// returns when all are done. Models that do not fit are skipped; the first
// error is returned.
func (m *Manager) Prefetch(ctx context.Context, ids []string) error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := m.Acquire(ctx, id)
			if err != nil {
				errs[i] = err
				return
			}
			l.Release()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// once runs fn for key unless a run is in flight, in which case it waits for
// that run. fn gets a context that outlives the caller's, so that one
// cancelled waiter does not fail a transfer others wait on.
func (m *Manager) once(ctx context.Context, key string, fn func(context.Context) error) error {
	m.mu.Lock()
	f := m.flights[key]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		m.flights[key] = f
		m.mu.Unlock()
		go func() {
			f.err = fn(context.WithoutCancel(ctx))
			m.mu.Lock()
			delete(m.flights, key)
			m.mu.Unlock()
			close(f.done)
		}()
	} else {
		m.mu.Unlock()
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// promoteL2 copies the model from L3 into a shared-memory segment,
// verifying its sha256 on the way; a corrupt L3 file is dropped and fetched
// again once.
func (m *Manager) promoteL2(ctx context.Context, id string, src l4.Source) error {
	for try := 0; try < 2; try++ {
		l3, err := m.ensureL3(ctx, id, src)
		if err != nil {
			return err
		}
		if m.ram.has(l3.sum) {
			m.disk.unpin(l3)
			return nil
		}
		err = m.copyToRAM(l3, id)
		m.disk.unpin(l3)
		if errors.Is(err, ErrCorrupt) {
			m.log.Warn().Err(err).Str("model", id).Msg("dropping corrupt disk-tier file; fetching it again")
			m.disk.drop(l3.sum, true)
			continue
		}
		return err
	}
	return fmt.Errorf("promote %s: still corrupt after a fresh fetch: %w", id, ErrCorrupt)
}

func (m *Manager) copyToRAM(l3 *entry, id string) error {
	if err := m.ram.reserve(l3.size); err != nil {
		return err
	}
	start := m.clk.Now()
	in, err := os.Open(m.disk.path(l3.sum))
	if err != nil {
		m.ram.unreserve(l3.size)
		return fmt.Errorf("open disk-tier file: %w: %w", err, ErrCorrupt)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(m.ram.dir, ".tmp-*")
	if err != nil {
		m.ram.unreserve(l3.size)
		return fmt.Errorf("tier ram: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Truncate(l3.size); err == nil {
		_, _ = tmp.Seek(0, io.SeekStart)
	}
	n, sum, err := copyHash(tmp, in)
	m.disk.readOut(n)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && (n != l3.size || sum != l3.sum) {
		err = fmt.Errorf("disk-tier file %s: %d bytes with sha256 %s: %w", l3.sum, n, sum, ErrCorrupt)
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o444)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), m.ram.path(l3.sum))
	}
	if err != nil {
		m.ram.unreserve(l3.size)
		return err
	}
	e := m.ram.add(l3.sum, id, l3.size, m.clk.Since(start))
	m.ram.unpin(e)
	return nil
}

// ensureL3 returns the model's L3 entry pinned, fetching it from L4 if absent.
func (m *Manager) ensureL3(ctx context.Context, id string, src l4.Source) (*entry, error) {
	counted := false
	for attempt := 0; attempt < 3; attempt++ {
		if sum := m.sumOf(id, src); sum != "" {
			if e := m.disk.get(sum, !counted); e != nil {
				return e, nil
			}
			counted = true
		} else if !counted {
			m.disk.miss()
			counted = true
		}
		if err := m.once(ctx, "disk:"+id, func(ctx context.Context) error { return m.fetchL3(ctx, id, src) }); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("disk tier: %s evicted as soon as it was fetched: %w", id, ErrNoRoom)
}

// fetchL3 fetches the model from its backend into a temp file in the disk
// tier's directory, checks size and sha256, and renames it into place.
func (m *Manager) fetchL3(ctx context.Context, id string, src l4.Source) error {
	if src.Storage == nil {
		return fmt.Errorf("fetch %s: no storage backend", id)
	}
	if err := m.disk.reserve(src.Size); err != nil {
		return err
	}
	reserved := true
	defer func() {
		if reserved {
			m.disk.unreserve(src.Size)
		}
	}()
	start := m.clk.Now()
	tmp, err := os.CreateTemp(m.disk.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("tier disk: %w", err)
	}
	defer os.Remove(tmp.Name())
	n, sum, err := m.fetchInto(ctx, src, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	m.mu.Lock()
	m.remote.BytesOut += uint64(n)
	m.remote.Misses++
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("fetch %s from %s: %w", id, src.Backend, err)
	}
	if n != src.Size || (src.SHA256 != "" && sum != src.SHA256) {
		return fmt.Errorf("fetch %s from %s: got %d bytes with sha256 %s, want %d bytes with %q: %w",
			id, src.Backend, n, sum, src.Size, src.SHA256, ErrCorrupt)
	}
	if err := os.Rename(tmp.Name(), m.disk.path(sum)); err != nil {
		return fmt.Errorf("tier disk: %w", err)
	}
	took := m.clk.Since(start)
	reserved = false
	e := m.disk.add(sum, id, n, took)
	m.disk.unpin(e)
	m.mu.Lock()
	m.learned[id] = sum
	if n >= 64<<10 && took > 0 {
		bw := float64(n) / took.Seconds()
		if !m.bwSeen {
			m.remote.BandwidthBytesPerS, m.bwSeen = bw, true
		} else {
			m.remote.BandwidthBytesPerS = 0.7*m.remote.BandwidthBytesPerS + 0.3*bw
		}
	}
	m.mu.Unlock()
	m.log.Debug().Str("model", id).Int64("bytes", n).Dur("took", took).Msg("fetched into disk tier")
	return nil
}

// fetchInto fills tmp with the model's bytes and returns their count and
// sha256. A backend that implements sdk.Fetcher (a storage plugin with
// FetchTo) writes the file itself, so that bulk bytes do not cross the plugin
// connection; the kernel hashes them while they are written
// (hashWhileFetched). Any other backend, or one that answers ErrUnsupported,
// streams through Open and is hashed on the way.
//
// # Notes
//
// FetchTo hands the plugin tmp's path: a file this process created, with a
// random name, in its own cache directory. The plugin must share the file
// system and run as the same user; a backend that does not (a remote-only
// plugin) simply does not implement FetchTo. Nothing the plugin reports is
// trusted: the size and digest checked by the caller are those of the file.
// The digest taken while the plugin writes is kept only when it is the
// digest the catalog expects and the file is as long as what was hashed.
// Otherwise (no expected digest, a plugin that rewrote bytes in place) the
// file is hashed again from the start, as it is on disk. A plugin that
// rewrites bytes it wrote before, with others, without truncating, can
// leave a file that is not what was hashed: the L3 → L2 promotion verifies
// every file's digest again before a worker sees its bytes, as it must
// anyway, since a plugin runs as kiln's user and could write the file even
// after the rename.
func (m *Manager) fetchInto(ctx context.Context, src l4.Source, tmp *os.File) (int64, string, error) {
	if f, ok := src.Storage.(sdk.Fetcher); ok {
		wrote, n, sum, err := hashWhileFetched(tmp, func() (int64, error) {
			return f.FetchTo(ctx, src.Key, 0, 0, tmp.Name())
		})
		switch {
		case err == nil:
			if st, serr := tmp.Stat(); serr != nil || st.Size() != n || src.SHA256 == "" || sum != src.SHA256 {
				n, sum, err = copyHash(io.Discard, io.NewSectionReader(tmp, 0, math.MaxInt64))
			}
			if err == nil && n != wrote {
				err = fmt.Errorf("backend wrote %d bytes, file holds %d: %w", wrote, n, ErrCorrupt)
			}
			return n, sum, err
		case !errors.Is(err, sdk.ErrUnsupported):
			return 0, "", err
		}
		// The file is untouched (or truncated): stream into it from the start.
		if err := tmp.Truncate(0); err != nil {
			return 0, "", err
		}
	}
	rc, err := src.Storage.Open(ctx, src.Key, 0, 0)
	if err != nil {
		return 0, "", err
	}
	defer rc.Close()
	return copyHash(tmp, rc)
}

// Stats returns vram, ram, disk and remote, in that order. vram is empty
// until SetVRAMStats is called.
func (m *Manager) Stats() []Stats {
	m.mu.Lock()
	vf, remote := m.vram, m.remote
	m.mu.Unlock()
	vram := Stats{Name: "vram"}
	if vf != nil {
		vram = vf()
		vram.Name = "vram"
	}
	return []Stats{vram, m.ram.stats(), m.disk.stats(), remote}
}

// DiskPath is where the L3 copy of the model with digest sum lives (present
// or not); for tests and tools.
func (m *Manager) DiskPath(sum string) string { return m.disk.path(sum) }

// InRAM reports whether model id's bytes are in L2 now, without counting a
// hit or touching the entry: the dispatcher's lookahead offers a
// prefetching policy only the models that are not. A model whose digest
// this process has not learned (adopted from disk and not fetched since)
// reads as absent, which costs at most a prefetch that finds it.
func (m *Manager) InRAM(id string) bool {
	sum := m.Learned(id)
	return sum != "" && m.ram.has(sum)
}

// Holds reports whether model id's bytes are in RAM (L2) and on local disk
// (L3) now, without counting a hit: what the dispatcher prices a load by.
// A model whose digest this process has not learned reads as in neither.
func (m *Manager) Holds(id string) (ram, disk bool) {
	sum := m.Learned(id)
	if sum == "" {
		return false, false
	}
	return m.ram.has(sum), m.disk.has(sum)
}

// Learned returns the digest recorded for a model id, "" if none.
func (m *Manager) Learned(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.learned[id]
}

// followPoll is how long hashWhileFetched waits, at the end of what has
// been written so far, before it looks again: at the 0.3–1 GB/s a plugin
// writes, about a megabyte lands meanwhile.
const followPoll = time.Millisecond

// hashWhileFetched runs fetch, which fills f through a handle of its own
// (the plugin's), and meanwhile reads and hashes f's bytes as they land,
// while they are still in the page cache: hashing overlaps the transfer
// instead of following it with a second pass over the file. It returns what
// fetch reported, and the count and sha256 of the bytes it hashed. It
// returns once fetch has returned.
//
// While fetch runs, the reader stops at the first hole (writtenUpTo): a
// writer that fills the file out of order, or one preallocated, is hashed
// once the bytes before the hole are there, not as the zeros a hole reads
// as. A file found shorter than what was hashed means the writer started
// over (a restarted plugin's FetchTo truncates the file): hashing starts
// over with it. The digest is still only a candidate: a writer that
// rewrites bytes already written, without truncating, leaves bytes that
// were hashed before they changed. fetchInto keeps the candidate only when
// it is the digest the catalog expects.
func hashWhileFetched(f *os.File, fetch func() (int64, error)) (wrote, n int64, sum string, err error) {
	type result struct {
		wrote int64
		err   error
	}
	done := make(chan result, 1)
	go func() {
		w, err := fetch()
		done <- result{w, err}
	}()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	poll := time.NewTimer(followPoll)
	defer poll.Stop()
	var res *result
	for {
		next := buf
		if res == nil {
			if end, ok := writtenUpTo(f, n); ok && end-n < int64(len(buf)) {
				next = buf[:max(end-n, 0)]
			}
		}
		k, rerr := 0, io.EOF
		if len(next) > 0 {
			k, rerr = f.ReadAt(next, n)
		}
		if k > 0 {
			h.Write(next[:k])
			n += int64(k)
		}
		switch {
		case rerr == nil:
			continue // a full read: more may be there already
		case rerr != io.EOF:
			if res == nil {
				r := <-done // the plugin's call ends by itself (its context)
				res = &r
			}
			return res.wrote, n, "", fmt.Errorf("hash fetched bytes: %w", rerr)
		case res != nil:
			// fetch had returned before this read found the end: every
			// byte is hashed.
			return res.wrote, n, hex.EncodeToString(h.Sum(nil)), res.err
		}
		if k > 0 {
			continue
		}
		if st, serr := f.Stat(); serr == nil && st.Size() < n {
			h.Reset()
			n = 0
			continue
		}
		poll.Reset(followPoll)
		select {
		case r := <-done:
			res = &r // read once more to the end
		case <-poll.C:
		}
	}
}

// copyHash copies src to dst and hashes the bytes on another goroutine, so
// that reading, writing and hashing overlap.
func copyHash(dst io.Writer, src io.Reader) (int64, string, error) {
	const nbuf, size = 4, 4 << 20
	h := sha256.New()
	type chunk struct {
		b    []byte
		done chan struct{}
	}
	hashCh := make(chan chunk, nbuf)
	hashed := make(chan struct{})
	go func() {
		for c := range hashCh {
			h.Write(c.b)
			c.done <- struct{}{}
		}
		close(hashed)
	}()
	bufs := make([][]byte, nbuf)
	dones := make([]chan struct{}, nbuf)
	pending := make([]bool, nbuf)
	for i := range bufs {
		bufs[i] = make([]byte, size)
		dones[i] = make(chan struct{}, 1)
	}
	var n int64
	var err error
	for i := 0; ; i = (i + 1) % nbuf {
		if pending[i] {
			<-dones[i]
			pending[i] = false
		}
		k, rerr := io.ReadFull(src, bufs[i])
		if k > 0 {
			hashCh <- chunk{b: bufs[i][:k], done: dones[i]}
			pending[i] = true
			if _, werr := dst.Write(bufs[i][:k]); werr != nil {
				err = werr
				break
			}
			n += int64(k)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	close(hashCh)
	<-hashed
	return n, hex.EncodeToString(h.Sum(nil)), err
}
