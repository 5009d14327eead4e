package job

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Errors returned by the Store. Compare with errors.Is.
var (
	// ErrBadClass: the job's class is neither Interactive nor Batch.
	ErrBadClass = errors.New("unknown job class")
	// ErrBadID: a caller-chosen job id is empty, too long or has characters
	// outside [A-Za-z0-9._:-].
	ErrBadID = errors.New("invalid job id")
	// ErrDuplicate: a job with the same id is already stored.
	ErrDuplicate = errors.New("job id already exists")
	// ErrQueueFull: the class already has its limit of queued jobs; nothing
	// was written. The API answers 429.
	ErrQueueFull = errors.New("queue full")
	// ErrBadTransition: the state machine does not allow the move from the
	// job's current state.
	ErrBadTransition = errors.New("bad state transition")
	// ErrBadOrder: a job's Order is NaN or infinite.
	ErrBadOrder = errors.New("invalid job order")
	// ErrNotFound: no job has this id.
	ErrNotFound = errors.New("job not found")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("job store closed")
	// ErrLocked: another process (or another Store in this process) holds
	// the database file.
	ErrLocked = errors.New("job database is locked by another process")
)

// Bucket names and keys in the bbolt file.
var (
	bucketJobs = []byte("jobs") // id → Job as JSON
	bucketSeq  = []byte("seq")  // 8-byte big-endian seq → state code (1 byte) + id
	bucketMeta = []byte("meta") // keyLastSeq → 8-byte big-endian seq
	keyLastSeq = []byte("last_seq")
	// keyAppliedLSN is the last log batch whose records bbolt has.
	keyAppliedLSN = []byte("applied_lsn")
)

// DefaultLockTimeout is how long Open waits for the database file lock
// before it gives up with ErrLocked.
const DefaultLockTimeout = time.Second

// Option changes how Open builds a Store.
type Option func(*options)

type options struct {
	rand        io.Reader
	lockTimeout time.Duration
	noSync      bool
}

// WithoutSync has the store's log written without an fdatasync: a change
// is in the kernel's page cache when its method returns, which a crash of
// the process does not lose (a kill -9 included) but a crash of the
// machine may. For a store that is not the durable copy of its jobs: a
// cluster node's local queue, whose jobs JetStream holds replicated
// (internal/cluster) and which a restarted node drops in any case.
func WithoutSync() Option { return func(o *options) { o.noSync = true } }

// WithRand sets the source of the random part of generated job ids (default
// crypto/rand). The Store serialises its reads, so r need not be safe for
// concurrent use.
func WithRand(r io.Reader) Option { return func(o *options) { o.rand = r } }

// WithLockTimeout sets how long Open waits for the file lock held by another
// process before it fails with ErrLocked (default DefaultLockTimeout).
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) { o.lockTimeout = d }
}

// Store is the durable job queue. It is safe for concurrent use. Every method
// that changes a job returns only after the change is committed to disk (to
// the page cache only, with WithoutSync).
type Store struct {
	db      *bolt.DB
	cfg     Config
	clk     clock.Clock
	pruning atomic.Bool // a history prune is running

	randMu sync.Mutex
	rand   io.Reader

	// seq is the last sequence number handed out; Submit takes the next.
	seq atomic.Uint64

	// closeMu guards closed and the send side of reqs: senders hold it for
	// reading, Close takes it for writing before it closes reqs.
	closeMu sync.RWMutex
	closed  bool
	reqs    chan *op
	stopped chan struct{}

	notify chan struct{}

	// mu guards the in-memory view below. Only the committer goroutine (and
	// Open, before it starts) writes it.
	mu        sync.RWMutex
	queues    [2]queue // by classIndex
	queuedIDs map[string]*entry
	// live holds every queued or running job as last committed (liveJob):
	// Get and List take a job's Facts from it, and a transition builds the
	// job's next record from it and the workflow's bytes instead of
	// decoding the record it replaces. The committer reads it without the
	// lock: it is the only writer.
	live map[string]*liveJob
	// running holds the summary of every running job (Running).
	running   map[string]*Job
	counts    map[State]int
	stats     Stats
	recovered int

	// log is the write-ahead log, the durability point; committer only.
	log logWriter
	// lsn numbers the committer's batches; committer only.
	lsn uint64
	// overlay holds, per job id, the newest change that is in the log but
	// perhaps not yet in bbolt. Readers look here first, then in bbolt; the
	// indexer drops an entry only after bbolt has committed it (or something
	// newer), so a reader never misses a change. The committer adds, the
	// indexer removes, both under overlayMu.
	overlayMu sync.RWMutex
	overlay   map[string]*logRecord
	// snapMu keeps the indexer from retiring overlay entries while the
	// committer applies a batch. The committer reads bbolt through a
	// snapshot taken when the batch began, and the overlay at each lookup:
	// an entry retired in between (its bbolt commit after the snapshot)
	// would be in neither, and the batch would act on the job's older
	// state (a requeue refused as queued → queued, a start of a job "not
	// found"). Readers outside the committer read the overlay first and
	// need no such lock. Lock order: snapMu, then overlayMu.
	snapMu sync.Mutex

	// toIndex carries logged batches (and segments to delete) to the
	// indexer, in log order.
	toIndex      chan indexItem
	indexStopped chan struct{}
	// holdIndex stops the indexer from applying anything, and
	// holdIndexAfter (≥ 0) from applying anything more once it has
	// applied that many records: the test hooks for a crash between the
	// log append and the index update (TestHooks). indexedRecords counts
	// the records applied since Open; indexer only.
	holdIndex      bool
	holdIndexAfter int64
	indexedRecords int64
}

// indexItem is one logged batch for the indexer, or a finished segment that
// it may delete once bbolt has every record up to lsn.
type indexItem struct {
	lsn  uint64
	recs []*logRecord
	seg  *segment
}

// Test hooks for the crash tests, which kill kiln while acknowledged
// changes are in the log and not (all) in bbolt, and check that nothing is
// lost. Each is read once, by Open, from the environment; any other value
// than the ones below is ignored, and node logs a warning at start while
// one is on (TestHooks), since a store that never indexes keeps every
// change in memory and in its log. (Not KILN_…: kiln reads those as
// config keys, from files and flags too; these are environment only.)
const (
	// holdIndexEnv=1 keeps the Store from updating its bbolt index at
	// all: changes reach the log only.
	holdIndexEnv = "KILNTEST_HOLD_JOB_INDEX"
	// holdIndexAfterEnv=N (a decimal number ≥ 0) lets the indexer work
	// as usual until it has applied at least N records, then stops it
	// before its next bbolt transaction: bbolt keeps a prefix of the log
	// and the log the rest, as when kiln dies between an append and the
	// index update that would have carried it.
	holdIndexAfterEnv = "KILNTEST_HOLD_JOB_INDEX_AFTER"
)

// TestHooks describes the crash-test hooks this process's environment
// turns on (see holdIndexEnv), or returns "" when none is: the node logs
// it as a warning, because no production kiln should run with one.
func TestHooks() string {
	var on []string
	if os.Getenv(holdIndexEnv) == "1" {
		on = append(on, holdIndexEnv+"=1 (the job index is never updated)")
	}
	if n := holdIndexAfter(); n >= 0 {
		on = append(on, fmt.Sprintf("%s=%d (the job index stops after %d records)", holdIndexAfterEnv, n, n))
	}
	return strings.Join(on, ", ")
}

// holdIndexAfter returns holdIndexAfterEnv's number, or -1 when it is
// unset or not a number.
func holdIndexAfter() int64 {
	n, err := strconv.ParseInt(os.Getenv(holdIndexAfterEnv), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// Stats describe the committer and the queue.
type Stats struct {
	// Commits counts durable commits: batches appended to the log, each with
	// one fdatasync.
	Commits uint64
	// Ops counts the submissions and transitions that were committed.
	Ops uint64
	// JobsCommitted counts jobs committed by Submit.
	JobsCommitted uint64
	// SubmitCommits counts the commits that carried at least one submission.
	SubmitCommits uint64
	// FsyncsPerJob is SubmitCommits / JobsCommitted: what one accepted job
	// cost in durable writes. 1 without group commit, far less under load.
	FsyncsPerJob float64
	// MaxBatch is the largest number of operations one commit carried.
	MaxBatch int
	// IndexCommits counts the bbolt transactions that brought the index up
	// to date with the log (each one commit off the submit path, covering
	// every batch logged since the previous one).
	IndexCommits uint64
	// IndexErrors counts failed index updates; the log keeps the changes
	// and the next update retries them.
	IndexErrors uint64
	// CommitErrors counts commits that failed (every caller got the error).
	CommitErrors uint64
	// QueuedByClass is the number of queued jobs per class.
	QueuedByClass map[Class]int
	// States is the number of jobs per state.
	States map[State]int
}

// Open opens the queue database at path, creating it (mode 0600) if needed,
// and starts the committer. Zero fields of cfg take their defaults (see
// Config.WithDefaults); a nil clk means clock.Real(). Every job that was queued or running when the
// database was last closed is queued again; Recovered says how many.
//
// If another process holds the file, Open fails after the lock timeout with
// an error wrapping ErrLocked.
func Open(path string, cfg Config, clk clock.Clock, opts ...Option) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("job: open %s: %w", path, err)
	}
	if clk == nil {
		clk = clock.Real()
	}
	o := options{rand: rand.Reader, lockTimeout: DefaultLockTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: o.lockTimeout,
		// The free list is rebuilt from the pages at open instead of being
		// written on every commit: less work in the one goroutine that
		// every submit waits on.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Map 256 MiB up front so that a growing queue does not remap (and
		// block readers) every few megabytes.
		InitialMmapSize: 256 << 20,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("job: open %s: %w (waited %s: %w)", path, ErrLocked, o.lockTimeout, err)
		}
		return nil, fmt.Errorf("job: open %s: %w", path, err)
	}
	s := &Store{
		db:             db,
		cfg:            cfg,
		clk:            clk,
		rand:           o.rand,
		reqs:           make(chan *op, cfg.CommitMaxBatch),
		stopped:        make(chan struct{}),
		notify:         make(chan struct{}, 1),
		queuedIDs:      map[string]*entry{},
		live:           map[string]*liveJob{},
		running:        map[string]*Job{},
		counts:         map[State]int{},
		log:            logWriter{dbPath: path, noSync: o.noSync},
		overlay:        map[string]*logRecord{},
		toIndex:        make(chan indexItem, 1024),
		indexStopped:   make(chan struct{}),
		holdIndex:      os.Getenv(holdIndexEnv) == "1",
		holdIndexAfter: holdIndexAfter(),
	}
	if err := s.replay(path); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("job: open %s: %w", path, err)
	}
	if err := s.recover(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("job: open %s: %w", path, err)
	}
	if s.recovered > 0 {
		s.signal()
	}
	go s.run()
	go s.index()
	return s, nil
}

// replay brings bbolt up to date with the log left by the last run (a
// crash, or a failed index update), then deletes the log: every change that
// was acknowledged is in a synced segment, and records that bbolt already
// has (lsn ≤ its applied lsn) are skipped.
func (s *Store) replay(path string) error {
	segs, err := listSegments(path)
	if err != nil {
		return err
	}
	var recs []*logRecord
	for i, seg := range segs {
		// The newest segment may be a prepared one that never took a
		// record; a torn tail can be in the one before it.
		rs, err := readSegment(seg, i >= len(segs)-2)
		if err != nil {
			return err
		}
		for k := range rs {
			recs = append(recs, &rs[k])
		}
		s.log.gen = max(s.log.gen, seg.gen)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketSeq, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket: %w", err)
			}
		}
		applied := uint64(0)
		if v := tx.Bucket(bucketMeta).Get(keyAppliedLSN); len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		s.lsn = applied
		var fresh []*logRecord
		for _, r := range recs {
			s.lsn = max(s.lsn, r.lsn)
			if r.lsn > applied {
				fresh = append(fresh, r)
			}
		}
		return applyRecords(tx, fresh, s.lsn)
	})
	if err != nil {
		return fmt.Errorf("replay job log: %w", err)
	}
	for _, seg := range segs {
		if err := os.Remove(seg.path); err != nil {
			return fmt.Errorf("remove replayed job log: %w", err)
		}
	}
	return nil
}

// applyRecords writes logged changes into bbolt, in log order, and records
// that everything up to lsn is applied.
func applyRecords(tx *bolt.Tx, recs []*logRecord, lsn uint64) error {
	jobs, seqs, meta := tx.Bucket(bucketJobs), tx.Bucket(bucketSeq), tx.Bucket(bucketMeta)
	// Keys mostly arrive in increasing order: seqs, and job ids, which
	// start with their submit time (newID; the ComfyUI API's generated
	// prompt ids are UUIDv7 for this reason). Full pages mean fewer pages
	// written per transaction.
	seqs.FillPercent = 0.9
	jobs.FillPercent = 0.9
	var lastSeq uint64
	if v := meta.Get(keyLastSeq); len(v) == 8 {
		lastSeq = binary.BigEndian.Uint64(v)
	}
	newLastSeq := lastSeq
	for _, r := range recs {
		if r.del {
			if err := jobs.Delete([]byte(r.id)); err != nil {
				return fmt.Errorf("job %s: delete: %w", r.id, err)
			}
			if err := seqs.Delete(seqKey(r.seq)); err != nil {
				return fmt.Errorf("job %s: delete seq index: %w", r.id, err)
			}
			continue
		}
		if err := jobs.Put([]byte(r.id), r.data); err != nil {
			return fmt.Errorf("job %s: put: %w", r.id, err)
		}
		v := make([]byte, 0, 1+len(r.id))
		if err := seqs.Put(seqKey(r.seq), append(append(v, r.state), r.id...)); err != nil {
			return fmt.Errorf("job %s: put seq index: %w", r.id, err)
		}
		newLastSeq = max(newLastSeq, r.seq)
	}
	if newLastSeq > lastSeq {
		if err := meta.Put(keyLastSeq, binary.BigEndian.AppendUint64(nil, newLastSeq)); err != nil {
			return fmt.Errorf("put last seq: %w", err)
		}
	}
	if err := meta.Put(keyAppliedLSN, binary.BigEndian.AppendUint64(nil, lsn)); err != nil {
		return fmt.Errorf("put applied lsn: %w", err)
	}
	return nil
}

// recover creates the buckets, queues every unfinished job again and builds
// the in-memory index and counts.
func (s *Store) recover() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		jobs, err := tx.CreateBucketIfNotExists(bucketJobs)
		if err != nil {
			return fmt.Errorf("create bucket: %w", err)
		}
		seqs, err := tx.CreateBucketIfNotExists(bucketSeq)
		if err != nil {
			return fmt.Errorf("create bucket: %w", err)
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("create bucket: %w", err)
		}
		var last uint64
		if v := meta.Get(keyLastSeq); len(v) == 8 {
			last = binary.BigEndian.Uint64(v)
		}
		type fix struct {
			j  *Job
			lj *liveJob
		}
		var fixes []fix
		c := seqs.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 || len(v) < 2 {
				return fmt.Errorf("corrupt seq index entry %x", k)
			}
			seq := binary.BigEndian.Uint64(k)
			last = max(last, seq)
			st, ok := stateOfCode(v[0])
			if !ok {
				return fmt.Errorf("seq %d: unknown state code %q", seq, v[0])
			}
			if st != Queued && st != Running {
				s.counts[st]++
				continue
			}
			id := string(v[1:])
			data := jobs.Get([]byte(id))
			j, err := decodeJob(id, data)
			if err != nil {
				return fmt.Errorf("seq %d: %w", seq, err)
			}
			// The one parse of a recovered job's graph: its Facts did not
			// survive the restart.
			j.Facts = deriveFacts(j.Workflow)
			lj := &liveJob{wfAt: workflowAtOf(data, j)}
			if j.State == Running {
				j.State = Queued
				j.StartedAt = time.Time{}
				j.Worker = ""
				fixes = append(fixes, fix{j: j, lj: lj})
			}
			lj.sum = summaryOf(j)
			s.live[id] = lj
			s.addQueued(lj.sum)
			s.counts[Queued]++
			s.recovered++
		}
		// Write after the scan: bbolt cursors must not see their bucket
		// change under them.
		for _, f := range fixes {
			wfAt, err := putJob(jobs, seqs, f.j)
			if err != nil {
				return err
			}
			f.lj.wfAt = wfAt
		}
		s.seq.Store(last)
		return nil
	})
}

// Recovered returns how many jobs Open found queued or running and queued
// again.
func (s *Store) Recovered() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.recovered
}

// Close stops the committer, after it has committed everything already
// handed to it, waits for the index to catch up with the log, and closes the
// database. Calls after Close fail with ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.closeMu.Unlock()
	<-s.stopped
	<-s.indexStopped
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("job: close: %w", err)
	}
	return nil
}

// Notify returns a channel that receives a value whenever a job becomes
// queued (submitted, re-queued, or recovered by Open). It has capacity one,
// so signals coalesce: after a receive, look at Snapshot until it is empty.
// There is one channel per Store, meant for one dispatcher.
func (s *Store) Notify() <-chan struct{} { return s.notify }

func (s *Store) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the committer's counters and the queue sizes.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.stats
	if st.JobsCommitted > 0 {
		st.FsyncsPerJob = float64(st.SubmitCommits) / float64(st.JobsCommitted)
	}
	st.QueuedByClass = map[Class]int{Interactive: s.queues[0].live, Batch: s.queues[1].live}
	st.States = s.countsLocked()
	return st
}

// op is one change for the committer. apply runs inside the write
// transaction; it must check everything before it writes, so that a refused
// op leaves nothing behind. On success it may set mem, which runs under
// s.mu after the commit, in commit order.
type op struct {
	submit bool
	apply  func(w *writer) error
	mem    func()
	err    error
	done   chan struct{}
}

// writer is the committer's view of one batch: bbolt as of a read
// transaction, under the overlay of logged changes bbolt may not have yet,
// under the changes of the ops already applied in this batch.
type writer struct {
	s          *Store
	jobs, seqs *bolt.Bucket // read-only
	changed    map[string]*logRecord
	recs       []*logRecord
	// live holds the changes this batch made to Store.live, which are
	// applied after the commit: a nil value is a job that ended.
	live map[string]*liveJob
	// queuedDelta is the change of queued jobs per class made by the ops
	// already applied in this batch.
	queuedDelta [2]int
	wrote       int
}

// pending returns the newest logged or batched change of id, if any.
func (w *writer) pending(id string) *logRecord {
	if r := w.changed[id]; r != nil {
		return r
	}
	w.s.overlayMu.RLock()
	r := w.s.overlay[id]
	w.s.overlayMu.RUnlock()
	return r
}

// data returns the stored JSON of job id, or nil if there is none.
func (w *writer) data(id string) []byte {
	if r := w.pending(id); r != nil {
		return r.data // nil for a deletion
	}
	return w.jobs.Get([]byte(id))
}

// current returns job id as last committed. A queued or running job is
// built from what the store keeps of it (liveJob) and its record's
// workflow bytes, without decoding the record; any other (a finished job,
// or a record an older kiln wrote with json.Marshal) is decoded. The
// returned job's Workflow may alias bbolt's memory: it is valid until
// the batch ends.
func (w *writer) current(id string) (*Job, error) {
	data := w.data(id)
	if data == nil {
		return nil, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	lj := w.liveOf(id)
	if lj != nil && lj.wfAt > 0 {
		if wf, ok := workflowOf(data, lj.wfAt); ok {
			j := *lj.sum
			// The caller gets a job of its own, as from a decode.
			j.Models = slices.Clone(j.Models)
			if j.Order != nil {
				o := *j.Order
				j.Order = &o
			}
			j.Workflow = wf
			return &j, nil
		}
	}
	j, err := decodeJob(id, data)
	if err != nil {
		return nil, err
	}
	if lj != nil {
		j.Facts = lj.sum.Facts
	}
	return j, nil
}

// seqState returns job id's Seq and State: from the log record of its
// last change when bbolt may not have it yet (the record carries both),
// else from its decoded record.
func (w *writer) seqState(id string) (uint64, State, error) {
	if r := w.pending(id); r != nil {
		if st, ok := stateOfCode(r.state); ok && !r.del {
			return r.seq, st, nil
		}
		if r.del {
			return 0, "", fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
	}
	j, err := decodeJob(id, w.data(id))
	if err != nil {
		return 0, "", err
	}
	return j.Seq, j.State, nil
}

// liveOf returns what the store keeps of job id, with this batch's
// changes: nil when the job is not queued or running.
func (w *writer) liveOf(id string) *liveJob {
	if lj, ok := w.live[id]; ok {
		return lj
	}
	return w.s.live[id] // the committer is the map's only writer
}

// setLive records this batch's change of what the store keeps of job id
// (nil: the job ended).
func (w *writer) setLive(id string, lj *liveJob) {
	if w.live == nil {
		w.live = map[string]*liveJob{}
	}
	w.live[id] = lj
}

// liveJob is what the store keeps in memory of a queued or running job.
type liveJob struct {
	// sum is the job as committed, without its workflow (summaryOf; the
	// queue index shares it), Facts included.
	sum *Job
	// wfAt is where the workflow starts in the job's record (encodeRecord
	// puts it last); 0 when the record is one an older kiln wrote.
	wfAt int
}

// put records j, encoded as data, as the job's new stored form.
func (w *writer) put(j *Job, data []byte) {
	w.add(&logRecord{seq: j.Seq, state: codeOfState(j.State), id: j.ID, data: data})
}

// remove records the deletion of job id, whose seq is seq.
func (w *writer) remove(id string, seq uint64) {
	w.add(&logRecord{del: true, seq: seq, id: id})
}

func (w *writer) add(r *logRecord) {
	w.changed[r.id] = r
	w.recs = append(w.recs, r)
	w.wrote++
}

// do hands o to the committer and waits until it is committed or refused.
// Once o is handed over, do waits for the outcome even if ctx ends, so that
// the caller never mistakes a committed change for a failed one.
func (s *Store) do(ctx context.Context, o *op) error {
	o.done = make(chan struct{})
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case s.reqs <- o:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return ctx.Err()
	}
	s.closeMu.RUnlock()
	<-o.done
	return o.err
}

// run is the committer: it takes every op that is waiting (up to
// CommitMaxBatch), logs their changes with one fdatasync and wakes their
// callers. Ops that arrive during a commit wait in reqs and form the next
// batch, so batches grow with load and no delay is added when idle.
func (s *Store) run() {
	defer close(s.stopped)
	batch := make([]*op, 0, s.cfg.CommitMaxBatch)
	var buf []byte
	for {
		o, ok := <-s.reqs
		if !ok {
			break
		}
		batch = append(batch[:0], o)
		closing := false
	fill:
		for len(batch) < s.cfg.CommitMaxBatch {
			select {
			case o, ok := <-s.reqs:
				if !ok {
					closing = true
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		buf = s.commit(batch, buf[:0])
		clear(batch)
		if closing {
			break
		}
	}
	// The last segment goes to the indexer too, which deletes it once
	// bbolt has all of it.
	if seg := s.log.close(); seg.path != "" {
		s.toIndex <- indexItem{lsn: s.lsn, seg: &seg}
	}
	close(s.toIndex)
}

// testHookAfterSnapshot, set by a test only, runs in commit between the
// batch's bbolt snapshot and its lookups: it widens the window in which an
// index update could slip between the two.
var testHookAfterSnapshot func()

// commit applies a batch against the current state, appends the changes to
// the log with one fdatasync, then publishes them: the overlay, the
// in-memory index, the callers, and last the indexer. It returns buf for
// reuse.
func (s *Store) commit(batch []*op, buf []byte) []byte {
	w := &writer{s: s, changed: map[string]*logRecord{}}
	s.snapMu.Lock()
	tx, err := s.db.Begin(false)
	if err == nil {
		w.jobs, w.seqs = tx.Bucket(bucketJobs), tx.Bucket(bucketSeq)
		if testHookAfterSnapshot != nil {
			testHookAfterSnapshot()
		}
		for _, o := range batch {
			o.err = o.apply(w)
			if o.err != nil {
				o.mem = nil
			}
		}
		_ = tx.Rollback()
	}
	s.snapMu.Unlock()
	if err == nil {
		if w.wrote > 0 {
			s.lsn++
			for _, r := range w.recs {
				r.lsn = s.lsn
				buf = appendRecord(buf, r)
			}
			err = s.log.append(buf)
		}
	}
	switch {
	case err != nil:
		for _, o := range batch {
			o.err = fmt.Errorf("job: commit: %w", err)
		}
		s.mu.Lock()
		s.stats.CommitErrors++
		s.mu.Unlock()
	case w.wrote == 0:
		// Every op was refused: nothing to log, no fdatasync.
	default:
		s.overlayMu.Lock()
		for id, r := range w.changed {
			s.overlay[id] = r
		}
		s.overlayMu.Unlock()
		var submits, ops uint64
		s.mu.Lock()
		for _, o := range batch {
			if o.err != nil {
				continue
			}
			ops++
			if o.submit {
				submits++
			}
			if o.mem != nil {
				o.mem()
			}
		}
		s.stats.Commits++
		s.stats.Ops += ops
		s.stats.JobsCommitted += submits
		if submits > 0 {
			s.stats.SubmitCommits++
		}
		s.stats.MaxBatch = max(s.stats.MaxBatch, len(batch))
		s.mu.Unlock()
	}
	for _, o := range batch {
		close(o.done)
	}
	if err == nil && w.wrote > 0 {
		s.toIndex <- indexItem{lsn: s.lsn, recs: w.recs}
		if seg, ok := s.log.rotate(); ok {
			s.toIndex <- indexItem{lsn: s.lsn, seg: &seg}
		}
	}
	s.maybePrune()
	return buf
}

// index is the indexer: it applies logged batches to bbolt, as many as are
// waiting in one transaction, then drops them from the overlay and deletes
// the log segments bbolt now has in full. It runs behind the committer, so
// bbolt's two syncs and its B+tree work are off the path every submitter
// waits on. A failed update is retried; the log keeps the changes meanwhile.
func (s *Store) index() {
	defer close(s.indexStopped)
	var pending []indexItem
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		closing := false
		select {
		case it, ok := <-s.toIndex:
			if !ok {
				closing = true
				break
			}
			pending = append(pending, it)
		case <-retry.C:
		}
	drain:
		for !closing {
			select {
			case it, ok := <-s.toIndex:
				if !ok {
					closing = true
					break drain
				}
				pending = append(pending, it)
			default:
				break drain
			}
		}
		if len(pending) > 0 && !s.indexHeld() {
			if err := s.applyIndex(pending); err != nil {
				s.mu.Lock()
				s.stats.IndexErrors++
				s.mu.Unlock()
				if !closing {
					retry.Reset(100 * time.Millisecond)
				}
			} else {
				clear(pending)
				pending = pending[:0]
				if !closing {
					// Let batches gather: each bbolt transaction costs two
					// fdatasyncs, a meta page and the branch pages its keys
					// touch, whatever it carries, and competes with the
					// log's syncs for the disk. The wait ends early when the
					// committer stops, so that Close does not wait for it.
					retry.Reset(indexInterval)
					select {
					case <-retry.C:
					case <-s.stopped:
					}
				}
			}
		}
		if closing {
			return
		}
	}
}

// indexInterval is the least time between two index updates. The overlay
// holds what bbolt has not yet, so a longer interval costs memory, not
// correctness: about indexInterval's worth of logged changes (at 5,000
// submits a second, 500 records of ~2 KB), and replay after a crash reads
// that much more log.
const indexInterval = 100 * time.Millisecond

// indexHeld says whether a test hook stops the indexer now.
func (s *Store) indexHeld() bool {
	return s.holdIndex || (s.holdIndexAfter >= 0 && s.indexedRecords >= s.holdIndexAfter)
}

// applyIndex commits items to bbolt, then retires them.
func (s *Store) applyIndex(items []indexItem) error {
	var recs []*logRecord
	var lsn uint64
	for _, it := range items {
		recs = append(recs, it.recs...)
		lsn = max(lsn, it.lsn)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return applyRecords(tx, recs, lsn) }); err != nil {
		return err
	}
	s.indexedRecords += int64(len(recs))
	// Only now may readers stop seeing these changes in the overlay. An
	// entry that a newer change replaced stays. Not during a batch whose
	// snapshot predates this update (snapMu).
	s.snapMu.Lock()
	s.overlayMu.Lock()
	for _, r := range recs {
		if s.overlay[r.id] == r {
			delete(s.overlay, r.id)
		}
	}
	s.overlayMu.Unlock()
	s.snapMu.Unlock()
	for _, it := range items {
		if it.seg != nil {
			// A segment whose removal is lost in a crash is harmless:
			// replay skips what bbolt has (applied lsn).
			_ = os.Remove(it.seg.path)
		}
	}
	s.mu.Lock()
	s.stats.IndexCommits++
	s.mu.Unlock()
	return nil
}

// getJob reads and decodes one job.
func getJob(jobs *bolt.Bucket, id string) (*Job, error) {
	return decodeJob(id, jobs.Get([]byte(id)))
}

// recordDecodes counts decodeJob's decodes of stored records and gets the
// calls of Store.Get (ReadCounts).
var recordDecodes, gets atomic.Uint64

// ReadCounts returns how many stored job records this process has decoded
// (each with its workflow's bytes: the committer's transitions decode the
// job they change) and how many of those were Store.Get calls. The
// parse-once test in internal/node checks that nothing on a job's path
// reads back with Get a job the store had just handed over.
func ReadCounts() (records, getCalls uint64) { return recordDecodes.Load(), gets.Load() }

// decodeJob decodes a job's stored JSON; nil means there is no such job.
func decodeJob(id string, v []byte) (*Job, error) {
	if v == nil {
		return nil, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	recordDecodes.Add(1)
	j := new(Job)
	if err := json.Unmarshal(v, j); err != nil {
		return nil, fmt.Errorf("job %s: decode: %w", id, err)
	}
	return j, nil
}

// deriveFacts parses a stored workflow for its Facts, with the default
// limits: the API checked the graph at submit against the limits of the
// time, and a graph that no longer parses is judged by its models alone
// (nil), as it would be by the dispatcher.
func deriveFacts(wf json.RawMessage) *workflow.Facts {
	if len(wf) == 0 {
		return nil
	}
	g, err := workflow.Parse(wf, workflow.Limits{})
	if err != nil {
		return nil
	}
	return g.Facts()
}

// putJob writes j and its seq index entry straight into bbolt (recovery,
// before the log is in use), and returns where the record's workflow
// starts.
func putJob(jobs, seqs *bolt.Bucket, j *Job) (int, error) {
	data, wfAt, err := encodeRecord(j)
	if err != nil {
		return 0, fmt.Errorf("job %s: encode: %w", j.ID, err)
	}
	if err := jobs.Put([]byte(j.ID), data); err != nil {
		return 0, fmt.Errorf("job %s: put: %w", j.ID, err)
	}
	if err := seqs.Put(seqKey(j.Seq), seqValue(j.State, j.ID)); err != nil {
		return 0, fmt.Errorf("job %s: put seq index: %w", j.ID, err)
	}
	return wfAt, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func seqValue(st State, id string) []byte {
	v := make([]byte, 0, 1+len(id))
	v = append(v, codeOfState(st))
	return append(v, id...)
}

// State codes in the seq index, so that counting and filtering by state need
// not decode jobs.
func codeOfState(st State) byte {
	switch st {
	case Queued:
		return 'q'
	case Running:
		return 'r'
	case Done:
		return 'd'
	case Failed:
		return 'f'
	case Cancelled:
		return 'c'
	}
	panic(fmt.Sprintf("job: unknown state %q", st))
}

func stateOfCode(c byte) (State, bool) {
	switch c {
	case 'q':
		return Queued, true
	case 'r':
		return Running, true
	case 'd':
		return Done, true
	case 'f':
		return Failed, true
	case 'c':
		return Cancelled, true
	}
	return "", false
}
