package job

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kiln-gpu/kiln/kernel/clock"
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
)

// DefaultLockTimeout is how long Open waits for the database file lock
// before it gives up with ErrLocked.
const DefaultLockTimeout = time.Second

// Option changes how Open builds a Store.
type Option func(*options)

type options struct {
	rand        io.Reader
	lockTimeout time.Duration
}

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
// that changes a job returns only after the change is committed to disk.
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
	counts    map[State]int
	stats     Stats
	recovered int

	// lastSeqOnDisk is the highest seq in the meta bucket; committer only.
	lastSeqOnDisk uint64
}

// Stats describe the committer and the queue.
type Stats struct {
	// Commits counts bbolt write transactions, each one durable write
	// (bbolt syncs its data pages, then its meta page).
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
		db:        db,
		cfg:       cfg,
		clk:       clk,
		rand:      o.rand,
		reqs:      make(chan *op, cfg.CommitMaxBatch),
		stopped:   make(chan struct{}),
		notify:    make(chan struct{}, 1),
		queuedIDs: map[string]*entry{},
		counts:    map[State]int{},
	}
	if err := s.recover(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("job: open %s: %w", path, err)
	}
	if s.recovered > 0 {
		s.signal()
	}
	go s.run()
	return s, nil
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
		if v := meta.Get(keyLastSeq); len(v) == 8 {
			s.lastSeqOnDisk = binary.BigEndian.Uint64(v)
		}
		last := s.lastSeqOnDisk
		type fix struct {
			key []byte
			j   *Job
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
			j, err := getJob(jobs, id)
			if err != nil {
				return fmt.Errorf("seq %d: %w", seq, err)
			}
			if j.State == Running {
				j.State = Queued
				j.StartedAt = time.Time{}
				j.Worker = ""
				fixes = append(fixes, fix{key: bytes.Clone(k), j: j})
			}
			s.addQueued(summaryOf(j))
			s.counts[Queued]++
			s.recovered++
		}
		// Write after the scan: bbolt cursors must not see their bucket
		// change under them.
		for _, f := range fixes {
			if err := putJob(jobs, seqs, f.j); err != nil {
				return err
			}
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
// handed to it, and closes the database. Calls after Close fail with
// ErrClosed. Close is idempotent.
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

// writer is the committer's view of one transaction.
type writer struct {
	jobs, seqs *bolt.Bucket
	// queuedDelta is the change of queued jobs per class made by the ops
	// already applied in this transaction.
	queuedDelta [2]int
	maxSeq      uint64
	wrote       int
	// fatal is a storage error: the whole transaction is rolled back.
	fatal error
}

// errNothingToCommit rolls back a transaction in which every op was refused,
// so that refusals cost no fsync.
var errNothingToCommit = errors.New("nothing to commit")

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
// CommitMaxBatch), commits them in one transaction and wakes their callers.
// Ops that arrive during a commit wait in reqs and form the next batch, so
// batches grow with load and no delay is added when idle.
func (s *Store) run() {
	defer close(s.stopped)
	batch := make([]*op, 0, s.cfg.CommitMaxBatch)
	for {
		o, ok := <-s.reqs
		if !ok {
			return
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
		s.commit(batch)
		clear(batch)
		if closing {
			return
		}
	}
}

func (s *Store) commit(batch []*op) {
	w := &writer{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		w.jobs = tx.Bucket(bucketJobs)
		w.seqs = tx.Bucket(bucketSeq)
		w.seqs.FillPercent = 0.9 // keys mostly arrive in increasing order
		for _, o := range batch {
			o.err = o.apply(w)
			if w.fatal != nil {
				return w.fatal
			}
			if o.err != nil {
				o.mem = nil
			}
		}
		if w.wrote == 0 {
			return errNothingToCommit
		}
		if w.maxSeq > s.lastSeqOnDisk {
			if err := tx.Bucket(bucketMeta).Put(keyLastSeq, binary.BigEndian.AppendUint64(nil, w.maxSeq)); err != nil {
				return fmt.Errorf("put last seq: %w", err)
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errNothingToCommit):
	case err != nil:
		for _, o := range batch {
			o.err = fmt.Errorf("job: commit: %w", err)
		}
		s.mu.Lock()
		s.stats.CommitErrors++
		s.mu.Unlock()
	default:
		s.lastSeqOnDisk = max(s.lastSeqOnDisk, w.maxSeq)
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
	s.maybePrune()
}

// getJob reads and decodes one job.
func getJob(jobs *bolt.Bucket, id string) (*Job, error) {
	v := jobs.Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	j := new(Job)
	if err := json.Unmarshal(v, j); err != nil {
		return nil, fmt.Errorf("job %s: decode: %w", id, err)
	}
	return j, nil
}

// putJob writes j and its seq index entry.
func putJob(jobs, seqs *bolt.Bucket, j *Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("job %s: encode: %w", j.ID, err)
	}
	return putEncoded(jobs, seqs, j, data)
}

func putEncoded(jobs, seqs *bolt.Bucket, j *Job, data []byte) error {
	if err := jobs.Put([]byte(j.ID), data); err != nil {
		return fmt.Errorf("job %s: put: %w", j.ID, err)
	}
	if err := seqs.Put(seqKey(j.Seq), seqValue(j.State, j.ID)); err != nil {
		return fmt.Errorf("job %s: put seq index: %w", j.ID, err)
	}
	return nil
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
