package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-gpu/kiln/internal/job"
)

// Outputs. The workers of the node that runs a job write its files into
// that node's output directory, one folder per job (the first element of
// an output's subfolder is its job's id). Once the job's record says done,
// the node copies the files into the object store KILN_outputs, so that any
// node serves them, also after this one is gone. Recording first and
// copying after keeps the copy (several replicated writes per file) off the
// time a client waits for its job; in between, a /view of an output on
// another node waits for its copy (OpenOutput), and a node killed in
// between makes the copy when it starts again (its notes in PendingDir).

const (
	// copyWait bounds how long a /view of a finished job's output, on a
	// node that did not run it, waits for the copy into the object store;
	// then it answers that the cluster is unavailable (503), never that
	// the file does not exist.
	copyWait = 15 * time.Second
	// copyPoll is how often that wait looks for the copy.
	copyPoll = 20 * time.Millisecond
	// copyTries bounds the tries of one copy whose writes fail.
	copyTries = 20
	// recentRecords is how many ended jobs this node keeps whole for Get.
	recentRecords = 256
)

// OpenOutput opens a file a job wrote, from the cluster's object store. A
// file that a finished job lists but that its node has not copied yet is
// waited for, up to copyWait, and then reported as unavailable (the node
// copies it when it is back). Not found wraps os.ErrNotExist.
func (c *Cluster) OpenOutput(ctx context.Context, typ, subfolder, name string) (io.ReadCloser, error) {
	oname := outputName(typ, subfolder, name)
	obj, err := c.outputs.Get(ctx, oname)
	if err == nil {
		return obj, nil
	}
	if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("cluster: output %s: %v: %w", name, err, ErrUnavailable)
	}
	rec := c.outputOf(ctx, oname, subfolder)
	if rec == nil {
		return nil, os.ErrNotExist
	}
	// A node that is gone (no heartbeat for nodeTTL) copies nothing until
	// it starts again (its notes in PendingDir): waiting for it, at first
	// or once it is found gone, would only hold the client.
	gone := func() error {
		if rec.Node == c.cfg.NodeID || c.alive(rec.Node) {
			return nil
		}
		return fmt.Errorf("cluster: output %s of job %s: node %s, which ran it, is not in the cluster (no heartbeat for %s); its outputs are copied when it starts again: %w",
			name, rec.ID, rec.Node, nodeTTL, ErrUnavailable)
	}
	if err := gone(); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, copyWait)
	defer cancel()
	t := time.NewTicker(copyPoll)
	defer t.Stop()
	for {
		select {
		case <-wctx.Done():
			return nil, fmt.Errorf("cluster: output %s of job %s: node %s has not copied it into the object store within %s: %w",
				name, rec.ID, rec.Node, copyWait, ErrUnavailable)
		case <-t.C:
		}
		_, err := c.outputs.GetInfo(wctx, oname)
		switch {
		case err == nil:
			obj, err := c.outputs.Get(ctx, oname)
			if err != nil {
				return nil, fmt.Errorf("cluster: output %s: %v: %w", name, err, ErrUnavailable)
			}
			return obj, nil
		case errors.Is(err, jetstream.ErrObjectNotFound), wctx.Err() != nil:
			if err := gone(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("cluster: output %s: %v: %w", name, err, ErrUnavailable)
		}
	}
}

// outputOf returns the record of the finished job that lists the output
// oname and whose copy may still come: done, on another node or with its
// copy under way here. Nil otherwise.
func (c *Cluster) outputOf(ctx context.Context, oname, subfolder string) *Record {
	id, _, _ := strings.Cut(strings.TrimLeft(strings.ReplaceAll(subfolder, "\\", "/"), "/"), "/")
	if id == "" {
		return nil
	}
	rec, _, err := c.get(ctx, id)
	if err != nil || rec.State != job.Done {
		return nil
	}
	if rec.Node == c.cfg.NodeID {
		c.mu.Lock()
		_, copying := c.written[id]
		c.mu.Unlock()
		if !copying {
			return nil
		}
	}
	for _, o := range rec.Outputs {
		if outputName(o.Type, o.Subfolder, o.Filename) == oname {
			return rec
		}
	}
	return nil
}

// holdCopyEnv is a test hook for the crash test that kills a node between
// a job's record (done) and its outputs' copy
// (tests/TestClusterKilledBeforeOutputCopy): =1 holds every copy this node
// starts until the node stops, so that the copy's note stays in PendingDir
// and the output is in no object store, as when the node dies in between.
// It is read once, from the environment only (not KILN_…: kiln reads those
// as config keys, from files and flags too); any other value turns nothing
// on; a node logs a warning at start while it is on (TestHooks). Nothing in
// kiln sets it.
const holdCopyEnv = "KILNTEST_HOLD_OUTPUT_COPY"

// holdCopies reports whether holdCopyEnv is on in this process.
var holdCopies = sync.OnceValue(func() bool { return os.Getenv(holdCopyEnv) == "1" })

// TestHooks describes the crash-test hooks this process's environment
// turns on (see holdCopyEnv and auditEveryEnv), or returns "" when none is: the node logs it
// as a warning, because no production kiln should run with one.
func TestHooks() string {
	var on []string
	if holdCopies() {
		on = append(on, holdCopyEnv+"=1 (finished jobs' outputs are never copied to the object store)")
	}
	if d := auditHook(); d > 0 {
		on = append(on, fmt.Sprintf("%s=%s (the queue audit runs every %s and requeues records older than that)", auditEveryEnv, d, d))
	}
	return strings.Join(on, "; ")
}

// outputName is an output's name in the object store.
func outputName(typ, subfolder, name string) string {
	if typ == "" {
		typ = "output"
	}
	return path.Join(typ, path.Clean("/" + strings.ReplaceAll(subfolder, "\\", "/"))[1:], name)
}

// copyOutputs copies the files of a job this node recorded as done into the
// object store, once the API has finished them (written closed) or
// outputsWait has passed, retrying writes that fail; then it forgets the
// job's note. A node that stops first, or whose writes still fail after
// copyTries, leaves the note for its next start.
func (c *Cluster) copyOutputs(ctx context.Context, rec *Record, written <-chan struct{}) {
	defer func() {
		c.mu.Lock()
		delete(c.written, rec.ID)
		c.mu.Unlock()
	}()
	wait := time.NewTimer(outputsWait)
	defer wait.Stop()
	select {
	case <-ctx.Done():
		return
	case <-written:
	case <-wait.C:
	}
	if holdCopies() {
		// Test hook (holdCopyEnv): the node is killed while the copy waits
		// here, its note in PendingDir, the job's record done and its
		// files final (written); the line tells the test it is here.
		c.log.Warn().Str("job", rec.ID).Msg("holding the copy of a finished job's outputs until the node stops (test hook)")
		<-ctx.Done()
		return
	}
	start := time.Now()
	log := c.log.With().Str("job", rec.ID).Logger()
	outs := rec.Outputs
	for try := 1; len(outs) > 0; try++ {
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		var err error
		outs, err = c.uploadOutputs(octx, outs)
		cancel()
		if len(outs) == 0 {
			if err != nil {
				log.Warn().Err(err).Msg("copy outputs to the cluster's object store; they stay on this node")
			}
			break
		}
		if ctx.Err() != nil {
			return
		}
		if try == copyTries {
			// The note stays: forgotten here, a NATS outage longer than
			// the tries (a few minutes) would leave the files on this
			// node only for good, and lost to the cluster with it.
			log.Error().Err(err).Int("tries", try).Msg("copy outputs to the cluster's object store; they stay on this node until it starts again")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Duration(try)*250*time.Millisecond, 5*time.Second)):
		}
	}
	c.forgetPending(rec.ID)
	log.Debug().Float64("copy_ms", ms(time.Since(start))).Msg("copied a finished job's outputs")
}

// uploadOutputs copies files of a finished job into the object store. It
// returns the outputs whose writes failed (worth another try) and every
// error; a file that is not there (a websocket image, removed once sent)
// is not tried again. The files' chunks and metadata are published
// together and their acknowledgements awaited once (putObject).
func (c *Cluster) uploadOutputs(ctx context.Context, outs []job.Output) ([]job.Output, error) {
	var errs []error
	var sent []job.Output
	var acks [][]jetstream.PubAckFuture
	for _, o := range outs {
		if o.Filename == "" || strings.ContainsAny(o.Filename, "/\\") {
			continue
		}
		rel := filepath.Clean(filepath.Join("/", filepath.FromSlash(o.Subfolder), o.Filename))
		f, err := os.Open(filepath.Join(c.local.OutputDir, rel))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		a, err := c.putObject(outputName(o.Type, o.Subfolder, o.Filename), f)
		f.Close()
		sent, acks = append(sent, o), append(acks, a)
		if err != nil {
			errs = append(errs, fmt.Errorf("put %s: %w", o.Filename, err))
			acks[len(acks)-1] = nil
		}
	}
	var again []job.Output
	for i, o := range sent {
		if acks[i] == nil {
			again = append(again, o)
			continue
		}
		if err := awaitAcks(ctx, acks[i]); err != nil {
			errs = append(errs, fmt.Errorf("put %s: %w", o.Filename, err))
			again = append(again, o)
		}
	}
	return again, errors.Join(errs...)
}

// objectChunk is the chunk size of the outputs' objects, nats.go's default.
const objectChunk = 128 << 10

// putObject publishes a file into the outputs' object store as nats.go's
// ObjectStore.Put lays it out (chunks on $O.<bucket>.C.<nuid>, then the
// object's info on $O.<bucket>.M.<name in base64>, which rolls up the
// name's earlier info), so that ObjectStore.Get reads it, and returns the
// publishes' acknowledgements to await. Unlike Put it reads no earlier
// info first and waits for nothing: a job's outputs have names no other
// job's have, and a name written again (a copy retried after a lost
// acknowledgement) leaves its earlier chunks to the bucket's TTL.
func (c *Cluster) putObject(name string, r io.Reader) ([]jetstream.PubAckFuture, error) {
	nuid := newToken() + newToken()
	chunkSubject := "$O." + outputsBucket + ".C." + nuid
	digest := sha256.New()
	var acks []jetstream.PubAckFuture
	var size uint64
	var chunks uint32
	for {
		buf := make([]byte, objectChunk) // the publish keeps it until its ack
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			digest.Write(buf[:n])
			a, perr := c.js.PublishMsgAsync(&nats.Msg{Subject: chunkSubject, Data: buf[:n]})
			if perr != nil {
				return nil, perr
			}
			acks = append(acks, a)
			size += uint64(n)
			chunks++
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: objectChunk}},
		Bucket:     outputsBucket, NUID: nuid, Size: size, Chunks: chunks, Digest: jetstream.GetObjectDigestValue(digest),
	}
	meta := nats.NewMsg("$O." + outputsBucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)))
	meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	var err error
	if meta.Data, err = json.Marshal(info); err != nil {
		return nil, err
	}
	a, err := c.js.PublishMsgAsync(meta)
	if err != nil {
		return nil, err
	}
	return append(acks, a), nil
}

// awaitAcks waits for every publish of acks to be acknowledged.
func awaitAcks(ctx context.Context, acks []jetstream.PubAckFuture) error {
	for _, a := range acks {
		select {
		case <-a.Ok():
		case err := <-a.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// pendingNote is the file in PendingDir that notes a job's copy to come.
// It is written before the job's record (notePending) and removed after
// the copy (forgetPending), without an fsync: it must outlive the process
// (a kill -9 keeps what the kernel has), as the worker's files must.
func (c *Cluster) pendingNote(id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(c.local.PendingDir, hex.EncodeToString(sum[:16]))
}

func (c *Cluster) notePending(id string) {
	if c.local.PendingDir == "" {
		return
	}
	if err := os.WriteFile(c.pendingNote(id), []byte(id), 0o644); err != nil {
		c.log.Warn().Err(err).Str("job", id).Msg("note an outputs' copy to come; a restart before it would not make it")
	}
}

func (c *Cluster) forgetPending(id string) {
	if c.local.PendingDir == "" {
		return
	}
	_ = os.Remove(c.pendingNote(id))
}

// resumeCopies makes the copies that a previous life of this node noted and
// did not finish: of each job whose record says this node finished it.
func (c *Cluster) resumeCopies(ctx context.Context) {
	if c.local.PendingDir == "" {
		return
	}
	entries, err := os.ReadDir(c.local.PendingDir)
	if err != nil {
		return
	}
	done := make(chan struct{})
	close(done) // the API of that life is gone: the files are as they are
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(c.local.PendingDir, e.Name()))
		if err != nil {
			continue
		}
		id := string(b)
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		rec, _, err := c.get(gctx, id)
		cancel()
		switch {
		case errors.Is(err, job.ErrNotFound) || (err == nil && (rec.State != job.Done || rec.Node != c.cfg.NodeID)):
			// Not this node's result: its record write failed or lost.
			_ = os.Remove(filepath.Join(c.local.PendingDir, e.Name()))
		case err == nil:
			c.log.Info().Str("job", id).Msg("copying the outputs of a job finished before this node stopped")
			c.mu.Lock()
			c.written[id] = done
			c.mu.Unlock()
			c.copyOutputs(ctx, rec, done)
		}
	}
}

// keepRecent keeps a record this node wrote as ended, for Get.
func (c *Cluster) keepRecent(r *Record) {
	s := *r
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.recent[s.ID]; !ok {
		c.recentIDs = append(c.recentIDs, s.ID)
	}
	c.recent[s.ID] = &s
	if len(c.recentIDs) > recentRecords {
		delete(c.recent, c.recentIDs[0])
		c.recentIDs = c.recentIDs[1:]
	}
}

// recentRecord returns a copy of a record keepRecent kept, or nil.
func (c *Cluster) recentRecord(id string) *Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.recent[id]
	if !ok || time.Since(r.FinishedAt) > c.cfg.JobTTL {
		return nil // not kept, or gone from the registry by now
	}
	s := *r
	return &s
}
