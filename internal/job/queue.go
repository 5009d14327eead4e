package job

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxIDLen bounds caller-chosen job ids (bbolt keys must stay small).
const maxIDLen = 128

// Submit validates job, stores it as queued and returns once it is committed
// to disk. It fills in the job's ID (when empty), Seq, CreatedAt and State,
// and resets Attempts, StartedAt, FinishedAt, Worker, Outputs and Error; on
// error *job is left unchanged.
//
// A generated id is 32 hex characters: 6 bytes of Unix milliseconds, then 10
// random bytes, so ids sort roughly by submission time (Seq is the exact
// order).
//
// Errors wrap ErrBadClass, ErrBadID, ErrDuplicate (the id exists), ErrQueueFull
// (the class has its limit of queued jobs; nothing written) or ErrClosed. If
// ctx ends before the committer takes the job, Submit returns ctx.Err() and
// nothing is written; once taken, Submit waits for the commit (a few
// milliseconds) whatever ctx does, so an error always means "not stored".
func (s *Store) Submit(ctx context.Context, job *Job) error {
	if job == nil {
		return errors.New("job: submit: nil job")
	}
	if job.Class != Interactive && job.Class != Batch {
		return fmt.Errorf("job: submit: class %q: %w", job.Class, ErrBadClass)
	}
	if o := job.Order; o != nil && (math.IsNaN(*o) || math.IsInf(*o, 0)) {
		return fmt.Errorf("job: submit: order %v: %w", *o, ErrBadOrder)
	}
	j := *job
	now := s.now()
	if j.ID == "" {
		id, err := s.newID(now)
		if err != nil {
			return fmt.Errorf("job: submit: %w", err)
		}
		j.ID = id
	} else if err := validateID(j.ID); err != nil {
		return fmt.Errorf("job: submit: %w", err)
	}
	ci := classIndex(j.Class)
	limit := s.limit(j.Class)
	// Refuse early, without a trip to the committer, when the class is
	// already full; the committer checks again, exactly.
	s.mu.RLock()
	full := s.queues[ci].live >= limit
	s.mu.RUnlock()
	if full {
		return fmt.Errorf("job: submit: %s queue has %d jobs: %w", j.Class, limit, ErrQueueFull)
	}
	if j.Facts == nil {
		// A caller that did not parse the graph (the cluster's runner, a
		// test): the one parse happens here, outside the committer, and
		// the workflow is checked, as the record carries it verbatim.
		if j.Workflow != nil && !json.Valid(j.Workflow) {
			_, err := json.Marshal(&j) // the error a record of it gives
			return fmt.Errorf("job: submit: encode: %w", err)
		}
		j.Facts = deriveFacts(j.Workflow)
	}
	j.State = Queued
	j.Attempts, j.Preemptions = 0, 0
	j.CreatedAt = now
	j.StartedAt, j.FinishedAt = time.Time{}, time.Time{}
	j.Worker, j.Outputs, j.Error = "", nil, ""
	j.Seq = s.seq.Add(1)
	if j.Order != nil {
		o := *j.Order // the caller keeps its own pointer
		j.Order = &o
	} else if j.Front {
		o := -float64(j.Seq)
		j.Order = &o
	}
	data, wfAt, err := encodeRecord(&j)
	if err != nil {
		return fmt.Errorf("job: submit: encode: %w", err)
	}
	lj := &liveJob{sum: summaryOf(&j), wfAt: wfAt}
	o := &op{submit: true}
	o.apply = func(w *writer) error {
		if w.data(j.ID) != nil {
			return fmt.Errorf("job: submit %s: %w", j.ID, ErrDuplicate)
		}
		if s.queues[ci].live+w.queuedDelta[ci] >= limit {
			return fmt.Errorf("job: submit: %s queue has %d jobs: %w", j.Class, limit, ErrQueueFull)
		}
		w.put(&j, data)
		w.queuedDelta[ci]++
		w.setLive(j.ID, lj)
		o.mem = func() {
			s.counts[Queued]++
			s.live[j.ID] = lj
			s.addQueued(lj.sum)
			s.signal()
		}
		return nil
	}
	if err := s.do(ctx, o); err != nil {
		return err
	}
	*job = j
	return nil
}

// ReserveSeq hands out the next submission number without storing a job,
// for a request answered without running (the ComfyUI API's result-cache
// hits), so that its number is its own and never reused by a later Submit
// while the process lives. The number is not persisted: after a restart a
// job may get it again, when nothing that held it is left.
func (s *Store) ReserveSeq() uint64 { return s.seq.Add(1) }

// Start moves a queued job to running on worker: Attempts goes up by one and
// StartedAt and Worker are set. It returns the full job (with its workflow).
// A job that is no longer queued (started by someone else, cancelled) gives
// an error wrapping ErrBadTransition; an unknown id, ErrNotFound.
func (s *Store) Start(id, worker string) (*Job, error) {
	return s.transition("start", id, func(j *Job, now time.Time) error {
		if j.State != Queued {
			return badTransition(j.State, Running)
		}
		j.State = Running
		j.Attempts++
		j.StartedAt = now
		j.Worker = worker
		return nil
	})
}

// Finish moves a running job to done with its outputs. It returns the job
// as committed.
func (s *Store) Finish(id string, outputs []Output) (*Job, error) {
	return s.transition("finish", id, func(j *Job, now time.Time) error {
		if j.State != Running {
			return badTransition(j.State, Done)
		}
		j.State = Done
		j.FinishedAt = now
		j.Outputs = slices.Clone(outputs)
		return nil
	})
}

// Fail moves a running or queued job to failed, recording reason in Error.
// It returns the job as committed.
func (s *Store) Fail(id, reason string) (*Job, error) {
	return s.transition("fail", id, func(j *Job, now time.Time) error {
		if j.State != Running && j.State != Queued {
			return badTransition(j.State, Failed)
		}
		j.State = Failed
		j.FinishedAt = now
		j.Error = reason
		return nil
	})
}

// Requeue gives a running job back to the queue because its worker died; the
// job keeps its place (its Seq) and its attempt count, and StartedAt and
// Worker are cleared. A job that has already been started MaxAttempts times
// fails instead, with Error "gave up after N lost attempts; last: <reason>"
// (a lost attempt: the worker died, or a model could not be made resident).
// The returned job's State says which happened. Requeued jobs are not
// counted against the class limit: they had been admitted already.
func (s *Store) Requeue(id, reason string) (*Job, error) {
	return s.transition("requeue", id, func(j *Job, now time.Time) error {
		if j.State != Running {
			return badTransition(j.State, Queued)
		}
		if lost := j.Attempts - j.Preemptions; lost >= s.cfg.MaxAttempts {
			j.State = Failed
			j.FinishedAt = now
			j.Error = fmt.Sprintf("gave up after %d lost attempts; last: %s", lost, reason)
			return nil
		}
		j.State = Queued
		j.StartedAt = time.Time{}
		j.Worker = ""
		return nil
	})
}

// Preempt gives a running job back to the queue because the scheduler gave
// its worker to a job of a higher class. As with Requeue the job keeps its
// place (its Seq and Order) and StartedAt and Worker are cleared; unlike
// Requeue the attempt is not lost: Preemptions goes up with it, so the job
// never fails for having been preempted. A job that is no longer running
// (it finished or was cancelled meanwhile) gives an error wrapping
// ErrBadTransition, and stays as it is.
func (s *Store) Preempt(id string) (*Job, error) {
	return s.transition("preempt", id, func(j *Job, now time.Time) error {
		if j.State != Running {
			return badTransition(j.State, Queued)
		}
		j.State = Queued
		j.Preemptions++
		j.StartedAt = time.Time{}
		j.Worker = ""
		return nil
	})
}

// Cancel moves a queued or running job to cancelled. For a running job the
// caller must tell its worker to stop; once cancelled, the job can no longer
// be finished, failed or re-queued. A job already done, failed or cancelled
// gives an error wrapping ErrBadTransition.
func (s *Store) Cancel(id string) (*Job, error) {
	return s.transition("cancel", id, func(j *Job, now time.Time) error {
		if j.State != Queued && j.State != Running {
			return badTransition(j.State, Cancelled)
		}
		j.State = Cancelled
		j.FinishedAt = now
		return nil
	})
}

// Delete removes a finished (done, failed or cancelled) job; other states
// give an error wrapping ErrBadTransition. Used to clear history.
func (s *Store) Delete(id string) error {
	o := &op{}
	o.apply = func(w *writer) error {
		seq, st, err := w.seqState(id)
		if err != nil {
			return fmt.Errorf("job: delete: %w", err)
		}
		if !st.terminal() {
			return fmt.Errorf("job %s: delete: job is %s: %w", id, st, ErrBadTransition)
		}
		w.remove(id, seq)
		o.mem = func() { s.counts[st]-- }
		return nil
	}
	return s.do(context.Background(), o)
}

// transition applies change to the stored job in the committer and returns
// the job as committed.
func (s *Store) transition(verb, id string, change func(j *Job, now time.Time) error) (*Job, error) {
	var out *Job
	o := &op{}
	o.apply = func(w *writer) error {
		j, err := w.current(id)
		if err != nil {
			return fmt.Errorf("job: %s: %w", verb, err)
		}
		from := j.State
		if err := change(j, s.now()); err != nil {
			return fmt.Errorf("job %s: %s: %w", id, verb, err)
		}
		to := j.State
		if to.terminal() && j.Facts != nil && j.OutputNodes == nil {
			// The Facts are dropped now; the record keeps what the
			// ComfyUI history needs of them.
			j.OutputNodes = j.Facts.Outputs
		}
		data, wfAt, err := encodeRecord(j)
		if err != nil {
			return fmt.Errorf("job %s: %s: encode: %w", id, verb, err)
		}
		w.put(j, data)
		// The returned job's workflow is a copy of its own, as from a
		// decode: the old record's bytes may be bbolt's, valid only
		// during the batch, and the new one's go on to the log and bbolt.
		wf, _ := workflowOf(data, wfAt)
		j.Workflow = bytes.Clone(wf)
		ci := classIndex(j.Class)
		if from == Queued {
			w.queuedDelta[ci]--
		}
		if to == Queued {
			w.queuedDelta[ci]++
		}
		var lj *liveJob // nil: the job ended, the store keeps nothing of it
		sum := summaryOf(j)
		if !to.terminal() {
			lj = &liveJob{sum: sum, wfAt: wfAt}
		}
		w.setLive(id, lj)
		o.mem = func() {
			s.moveLocked(from, to, sum)
			if lj != nil {
				s.live[id] = lj
			} else {
				// The returned job keeps its Facts; nothing after its
				// end asks.
				delete(s.live, id)
			}
		}
		out = j
		return nil
	}
	if err := s.do(context.Background(), o); err != nil {
		return nil, err
	}
	return out, nil
}

func badTransition(from, to State) error {
	return fmt.Errorf("%s → %s: %w", from, to, ErrBadTransition)
}

func (st State) terminal() bool { return st == Done || st == Failed || st == Cancelled }

// Get returns a copy of the job with this id, or an error wrapping
// ErrNotFound.
func (s *Store) Get(id string) (*Job, error) {
	gets.Add(1)
	var j *Job
	// The overlay is read before bbolt's snapshot is taken: the indexer
	// drops an entry only after bbolt has it, so one of the two has it.
	s.overlayMu.RLock()
	r := s.overlay[id]
	s.overlayMu.RUnlock()
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		if r != nil {
			j, err = decodeJob(id, r.data)
		} else {
			j, err = getJob(tx.Bucket(bucketJobs), id)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("job: get: %w", err)
	}
	if !j.State.terminal() {
		s.mu.RLock()
		if lj := s.live[id]; lj != nil {
			j.Facts = lj.sum.Facts
		}
		s.mu.RUnlock()
	}
	return j, nil
}

// List returns up to limit jobs in state (all states when state is ""),
// newest first (by descending Seq). limit ≤ 0 means no limit. Jobs are
// copies with their workflows, and queued and running ones with their
// Facts. Filtering by state reads only the seq index, but each listed job
// is decoded, so keep limit small on a busy node.
func (s *Store) List(state State, limit int) ([]*Job, error) {
	var code byte
	if state != "" {
		if code = codeOfStateSafe(state); code == 0 {
			return nil, fmt.Errorf("job: list: unknown state %q", state)
		}
	}
	// Changes that bbolt may not have yet supersede its entries for the same
	// jobs; taken before bbolt's snapshot, as in Get.
	s.overlayMu.RLock()
	newer := make(map[string]bool, len(s.overlay))
	var extra []*logRecord // the overlay's jobs in state, by descending seq
	for id, r := range s.overlay {
		newer[id] = true
		if !r.del && (code == 0 || r.state == code) {
			extra = append(extra, r)
		}
	}
	s.overlayMu.RUnlock()
	slices.SortFunc(extra, func(a, b *logRecord) int { return cmp.Compare(b.seq, a.seq) })
	var out []*Job
	full := func() bool { return limit > 0 && len(out) >= limit }
	takeExtra := func(above uint64) error {
		for len(extra) > 0 && extra[0].seq > above && !full() {
			j, err := decodeJob(extra[0].id, extra[0].data)
			if err != nil {
				return err
			}
			out = append(out, j)
			extra = extra[1:]
		}
		return nil
	}
	err := s.view(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		c := tx.Bucket(bucketSeq).Cursor()
		for k, v := c.Last(); k != nil && !full(); k, v = c.Prev() {
			if len(k) != 8 || len(v) < 2 {
				continue
			}
			if err := takeExtra(binary.BigEndian.Uint64(k)); err != nil {
				return err
			}
			if full() {
				break
			}
			if (code != 0 && v[0] != code) || newer[string(v[1:])] {
				continue
			}
			j, err := getJob(jobs, string(v[1:]))
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return takeExtra(0)
	})
	if err != nil {
		return nil, fmt.Errorf("job: list: %w", err)
	}
	s.mu.RLock()
	for _, j := range out {
		if lj := s.live[j.ID]; lj != nil && !j.State.terminal() {
			j.Facts = lj.sum.Facts
		}
	}
	s.mu.RUnlock()
	return out, nil
}

// codeOfStateSafe is codeOfState without the panic: 0 for unknown states.
func codeOfStateSafe(st State) byte {
	switch st {
	case Queued, Running, Done, Failed, Cancelled:
		return codeOfState(st)
	}
	return 0
}

// view runs a read transaction unless the store is closed.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// Counts returns the number of jobs in each state (every state is present,
// zero included). It reads memory only.
func (s *Store) Counts() map[State]int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.countsLocked()
}

func (s *Store) countsLocked() map[State]int {
	m := make(map[State]int, 5)
	for _, st := range []State{Queued, Running, Done, Failed, Cancelled} {
		m[st] = s.counts[st]
	}
	return m
}

// Running returns the running jobs, newest first (by descending Seq, as
// List(Running, 0) orders them), from memory: copies with their Facts but
// without the workflow. Callers that need no more of a running job than
// what List would decode for them (the ComfyUI interrupt, the dashboard,
// the watch's pending jobs) read no record this way.
func (s *Store) Running() []*Job {
	s.mu.RLock()
	out := make([]*Job, 0, len(s.running))
	for _, j := range s.running {
		c := *j
		c.Models = slices.Clone(j.Models)
		out = append(out, &c)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Job) int { return cmp.Compare(b.Seq, a.Seq) })
	return out
}

// IsQueued reports whether job id is queued. It reads memory only.
func (s *Store) IsQueued(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.queuedIDs[id] != nil
}

// QueuedLen returns the number of queued jobs of class.
func (s *Store) QueuedLen(class Class) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.queues[classIndex(class)].live
}

// Snapshot returns up to limit queued jobs (all when limit ≤ 0) in queue
// order across both classes: by Rank (Order when the job has one, else
// Seq), then Seq (CompareQueued). Without explicit orders that is
// submission order whatever the class: the store imposes no class order,
// which is the scheduling policy's to choose. A re-queued job keeps its
// original place. It reads memory only.
//
// The jobs are copies that carry the fields a scheduling policy needs (ID,
// Seq, Order, Class, Models, DeadlineMS, Tenant, ClientID, Attempts,
// CreatedAt) but not the Workflow: Start returns the full job.
func (s *Store) Snapshot(limit int) []*Job {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := s.queues[0].live + s.queues[1].live
	if limit > 0 {
		n = min(n, limit)
	}
	return s.mergeLocked(n, n)
}

// Window returns, of each class, up to perClass queued jobs from the head
// of that class's queue (all when perClass ≤ 0), merged into one list in
// queue order across classes (as Snapshot). It is the dispatcher's view of
// the queue: a class's first jobs are always in it, however many jobs of
// the other class are older, so a policy that favours a class sees that
// class's head, and a policy that does not sees the oldest jobs of both;
// neither finds the list reordered by class.
func (s *Store) Window(perClass int) []*Job {
	s.mu.RLock()
	defer s.mu.RUnlock()
	limit := max(s.queues[0].live, s.queues[1].live)
	if perClass > 0 {
		limit = min(limit, perClass)
	}
	return s.mergeLocked(min(s.queues[0].live, limit)+min(s.queues[1].live, limit), limit)
}

// mergeLocked merges the heads of the two class queues in CompareQueued
// order, taking at most perClass live jobs of each and n in all, and
// returns copies; callers hold s.mu.
func (s *Store) mergeLocked(n, perClass int) []*Job {
	out := make([]*Job, 0, n)
	var pos [2]int   // next index into each queue's items
	var taken [2]int // live jobs taken from each queue
	for ci := range s.queues {
		pos[ci] = s.queues[ci].head
	}
	// peek returns the next live entry of class ci within its budget.
	peek := func(ci int) *entry {
		q := &s.queues[ci]
		if taken[ci] >= perClass {
			return nil
		}
		for pos[ci] < len(q.items) && q.items[pos[ci]].dead {
			pos[ci]++
		}
		if pos[ci] == len(q.items) {
			return nil
		}
		return q.items[pos[ci]]
	}
	for len(out) < n {
		a, b := peek(0), peek(1)
		ci := 0
		switch {
		case a == nil && b == nil:
			return out
		case a == nil:
			ci = 1
		case b != nil && CompareQueued(b.j, a.j) < 0:
			ci = 1
		}
		e := s.queues[ci].items[pos[ci]]
		pos[ci]++
		taken[ci]++
		c := *e.j
		c.Models = slices.Clone(e.j.Models)
		out = append(out, &c)
	}
	return out
}

// The in-memory index of queued jobs.

// entry is one queued job in the index. Removal marks it dead; dead entries
// are dropped from the front as the head moves, and compacted away when they
// outnumber the live ones, so that taking the oldest job is O(1) amortised.
type entry struct {
	j    *Job // summary: no Workflow, Outputs
	dead bool
}

// queue holds one class's queued jobs in queue order (CompareQueued: Rank,
// then Seq). Dead entries keep their place, so items[head:] stays sorted.
type queue struct {
	items []*entry
	head  int // items[:head] are dead
	live  int
}

func (q *queue) add(e *entry) {
	q.live++
	// The common case: a job in submission order goes last.
	if n := len(q.items); n == q.head || CompareQueued(q.items[n-1].j, e.j) < 0 {
		q.items = append(q.items, e)
		return
	}
	// A re-queued job goes back to its place; a job with an explicit order
	// goes to its place.
	i, _ := slices.BinarySearchFunc(q.items[q.head:], e.j, func(x *entry, j *Job) int {
		return CompareQueued(x.j, j)
	})
	if i == 0 && q.head > 0 {
		// Ahead of everything (ComfyUI's front): reuse a dead slot.
		q.head--
		q.items[q.head] = e
		return
	}
	q.items = slices.Insert(q.items, q.head+i, e)
}

func (q *queue) remove(e *entry) {
	e.dead = true
	q.live--
	for q.head < len(q.items) && q.items[q.head].dead {
		q.items[q.head] = nil
		q.head++
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
		return
	}
	if dead := len(q.items) - q.live; dead > 64 && dead > q.live {
		kept := make([]*entry, 0, q.live)
		for _, x := range q.items[q.head:] {
			if !x.dead {
				kept = append(kept, x)
			}
		}
		q.items, q.head = kept, 0
	}
}

// addQueued puts a summary of j into the index; callers hold s.mu (or are
// Open, before the store is shared).
func (s *Store) addQueued(j *Job) {
	e := &entry{j: j}
	s.queuedIDs[j.ID] = e
	s.queues[classIndex(j.Class)].add(e)
}

// moveLocked records a committed transition in memory; callers hold s.mu.
func (s *Store) moveLocked(from, to State, sum *Job) {
	s.counts[from]--
	s.counts[to]++
	if from == Queued {
		if e := s.queuedIDs[sum.ID]; e != nil {
			delete(s.queuedIDs, sum.ID)
			s.queues[classIndex(e.j.Class)].remove(e)
		}
	}
	if to == Queued {
		s.addQueued(sum)
		s.signal()
	}
	if from == Running {
		delete(s.running, sum.ID)
	}
	if to == Running {
		s.running[sum.ID] = sum
	}
}

// summaryOf copies what the index keeps of j: everything but the workflow
// and outputs.
func summaryOf(j *Job) *Job {
	c := *j
	c.Workflow = nil
	c.Outputs = nil
	c.Models = slices.Clone(j.Models)
	return &c
}

func classIndex(c Class) int {
	if c == Interactive {
		return 0
	}
	return 1
}

func (s *Store) limit(c Class) int {
	if c == Interactive {
		return s.cfg.InteractiveLimit
	}
	return s.cfg.BatchLimit
}

// now is the store's clock in UTC, without a monotonic reading, so that
// stored and returned times compare equal after a JSON round trip.
func (s *Store) now() time.Time { return s.clk.Now().UTC() }

// newID returns 6 bytes of Unix milliseconds and 10 random bytes, in hex.
func (s *Store) newID(now time.Time) (string, error) {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	s.randMu.Lock()
	_, err := io.ReadFull(s.rand, b[6:])
	s.randMu.Unlock()
	if err != nil {
		return "", fmt.Errorf("generate id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func validateID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("id of %d bytes (want 1 to %d): %w", len(id), maxIDLen, ErrBadID)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '_', r == ':', r == '-':
		default:
			return fmt.Errorf("id %q: character %q: %w", id, r, ErrBadID)
		}
	}
	return nil
}
