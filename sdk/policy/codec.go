package policy

import (
	"errors"
	"math"
	"strconv"
	"time"
)

// Sizes of the ABI's fixed layouts that are not records, in bytes (see
// ABI.md); the records' sizes (JobSize, WorkerSize, …) and their encoders
// and decoders are generated from types.go into records_gen.go.
const (
	HeaderSize    = 56
	OutHeaderSize = 40
	TagUpdateSize = 16
	ParamDeclSize = 64
	maxParams     = 64
	maxParamName  = 32
)

// ErrShort is returned when a buffer ends before its layout says it does.
var ErrShort = errors.New("policy abi: buffer too short")

// Little-endian reads and appends, written out rather than taken from
// encoding/binary, which would bring reflect into every module; the
// compiler turns each into one load or store.
func u16le(b []byte) uint16 { _ = b[1]; return uint16(b[0]) | uint16(b[1])<<8 }
func u32le(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func u64le(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
func appendU16le(b []byte, v uint16) []byte { return append(b, byte(v), byte(v>>8)) }
func appendU32le(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}
func appendU64le(b []byte, v uint64) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

// The SDK formats its errors with strconv, not fmt: fmt brings reflect,
// os and the Unicode tables into every Go policy module (with
// encoding/binary, a fifth of its size), and a module's size is what its
// load and swap time scale with.
func itoa[T ~int | ~int64 | ~uint32](v T) string { return strconv.FormatInt(int64(v), 10) }

func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// wrappedError is msg: err, unwrapping to err (what fmt.Errorf's %w does).
type wrappedError struct {
	msg string
	err error
}

func (e *wrappedError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *wrappedError) Unwrap() error { return e.err }

func wrapError(msg string, err error) error { return &wrappedError{msg, err} }

// enc appends little-endian fields.
type enc []byte

func (e enc) u32(v uint32) enc { return appendU32le(e, v) }
func (e enc) u64(v uint64) enc { return appendU64le(e, v) }
func (e enc) i64(v int64) enc  { return appendU64le(e, uint64(v)) }

// dec reads little-endian fields; the first overrun sets err and every later
// read returns zero.
type dec struct {
	b   []byte
	off int
	err error
}

func (d *dec) need(n int) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || len(d.b)-d.off < n {
		d.err = ErrShort
		return false
	}
	return true
}

// rec returns the next n bytes as one record, so that a record's fields are
// read at constant offsets with one bounds check (this matters inside WASM,
// where every call costs).
func (d *dec) rec(n int) []byte {
	if !d.need(n) {
		return nil
	}
	r := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return r
}

func (d *dec) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := u32le(d.b[d.off:])
	d.off += 4
	return v
}

func (d *dec) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := u64le(d.b[d.off:])
	d.off += 8
	return v
}

func (d *dec) i64() int64 { return int64(d.u64()) }

// count reads a record count and checks that count records of size bytes
// can still follow, so that a hostile count cannot make us allocate.
func (d *dec) count(n uint32, size int) int {
	if d.err != nil {
		return 0
	}
	if uint64(n)*uint64(size) > uint64(len(d.b)-d.off) {
		d.err = wrapError("policy abi: "+itoa(int64(n))+" records of "+itoa(int64(size))+" bytes do not fit in "+itoa(int64(len(d.b)-d.off))+" bytes", ErrShort)
		return 0
	}
	return int(n)
}

func grow[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

func appendHeader(e enc, k Kind, c *Common) enc {
	e = appendU16le(e, ABIMajor)
	e = appendU16le(e, ABIMinor)
	e = e.u32(uint32(k)).i64(c.Now)
	for _, s := range c.State {
		e = e.u64(s)
	}
	e = e.u32(uint32(len(c.Params))).u32(0)
	for _, p := range c.Params {
		e = e.u64(math.Float64bits(p))
	}
	return e
}

func readHeader(d *dec, k Kind, c *Common) {
	if !d.need(HeaderSize) {
		return
	}
	// Fields are read from the record at fixed offsets, not one call each:
	// inside WASM a Go call costs more than the read.
	r := d.rec(HeaderSize)
	major, minor := u16le(r[0:]), u16le(r[2:])
	if major != ABIMajor {
		d.err = errors.New("policy abi: input is version " + itoa(int64(major)) + "." + itoa(int64(minor)) + ", this code speaks " + itoa(ABIMajor) + "." + itoa(ABIMinor))
		return
	}
	if got := Kind(u32le(r[4:])); got != k {
		d.err = errors.New("policy abi: input is for " + got.String() + ", want " + k.String())
		return
	}
	c.Now = int64(u64le(r[8:]))
	for i := range c.State {
		c.State[i] = u64le(r[16+8*i:])
	}
	n := u32le(r[48:])
	if n > maxParams {
		d.err = errors.New("policy abi: " + itoa(int64(n)) + " params, at most " + itoa(maxParams))
		return
	}
	c.Params = grow(c.Params, d.count(n, 8))
	pr := d.rec(8 * len(c.Params))
	for i := range c.Params {
		c.Params[i] = math.Float64frombits(u64le(pr[8*i:]))
	}
}

func appendModels(e enc, ms []ModelInfo) enc {
	for i := range ms {
		e = appendModelInfoRecord(e, &ms[i])
	}
	return e
}

func readModels(d *dec, n uint32, ms []ModelInfo) []ModelInfo {
	ms = grow(ms, d.count(n, ModelInfoSize))
	readModelInfoRecords(d, ms)
	return ms
}

// pool places the variable-length u32 lists (job models, worker residency)
// that follow the fixed records: each record holds its list's offset and
// length, and the lists follow all records in the same order. Encoding
// writes straight into dst in two passes over the records, with no
// scratch buffer, so that the host can encode into guest memory.
type pool struct{ n uint32 }

func (p *pool) add(ids []uint32) (off, n uint32) {
	off, n = p.n, uint32(len(ids))
	p.n += n
	return off, n
}

func jobLists(js []Job) (n int) {
	for i := range js {
		n += jobPoolLen(&js[i])
	}
	return n
}

func workerLists(ws []Worker) (n int) {
	for i := range ws {
		n += workerPoolLen(&ws[i])
	}
	return n
}

func appendJobLists(e enc, js []Job) enc {
	for i := range js {
		e = appendJobPool(e, &js[i])
	}
	return e
}

func appendWorkerLists(e enc, ws []Worker) enc {
	for i := range ws {
		e = appendWorkerPool(e, &ws[i])
	}
	return e
}

// span is a list's place in the pool, as its record gives it.
type span struct{ off, n uint32 }

// readJob reads the one job record of a balancing or routing input.
func readJob(d *dec, j *Job, spans []span) {
	if r := d.rec(JobSize); r != nil {
		decodeJobRecord(r, j, spans)
	}
}

// readPool reads the n u32s that the records' lists are spans of. Every
// one is a model id, checked here once rather than list by list.
func readPool(d *dec, n uint32, buf []uint32, nModels int) []uint32 {
	p := readU32s(d, n, buf)
	for _, id := range p {
		if int64(id) >= int64(nModels) {
			if d.err == nil {
				d.err = errors.New("policy abi: model " + itoa(int64(id)) + " out of range (" + itoa(int64(nModels)) + ")")
			}
			break
		}
	}
	return p
}

// outsidePool answers a list whose span does not fit in the pool p (the
// generated set*Lists slice the pool themselves). Each list shares the
// pool's array, capacity-limited so that appending to it copies: a policy
// may change or extend its lists without touching another's.
func outsidePool(d *dec, p []uint32, s span) []uint32 {
	if d.err == nil {
		d.err = errors.New("policy abi: list [" + itoa(int64(s.off)) + ",+" + itoa(int64(s.n)) + ") outside the pool of " + itoa(int64(len(p))))
	}
	return nil
}

func done(d *dec) error {
	if d.err != nil {
		return d.err
	}
	if d.off != len(d.b) {
		return errors.New("policy abi: " + itoa(int64(len(d.b)-d.off)) + " trailing bytes")
	}
	return nil
}

// AppendEvictionInput appends the binary snapshot of in to dst.
func AppendEvictionInput(dst []byte, in *EvictionInput) []byte {
	e := appendHeader(enc(dst), KindEviction, &in.Common)
	// The demand section (ABI 1.3) follows the wanted records, its count
	// in the body's word at 28, reserved (zero) before: a 1.2 input is
	// byte for byte the same, and a host sends the section only to a
	// module built for 1.3 or later, since an older decoder refuses
	// trailing bytes.
	nd := len(in.RecentDemand)
	if nd != 0 && nd != len(in.Entries) {
		nd = 0 // the encoder cannot fail: an inconsistent section is left out
	}
	e = e.u64(in.Need).u64(in.Free).u32(uint32(len(in.Entries))).u32(uint32(len(in.Ghosts))).u32(uint32(len(in.Wanted))).u32(uint32(nd))
	for i := range in.Entries {
		e = appendEntryRecord(e, &in.Entries[i])
	}
	for i := range in.Ghosts {
		e = appendGhostRecord(e, &in.Ghosts[i])
	}
	for i := range in.Wanted {
		e = appendWantedRecord(e, &in.Wanted[i])
	}
	for _, v := range in.RecentDemand[:nd] {
		e = e.u64(math.Float64bits(v))
	}
	return e
}

// DecodeEvictionInput decodes a snapshot into in, reusing its slices.
func DecodeEvictionInput(b []byte, in *EvictionInput) error {
	d := &dec{b: b}
	readHeader(d, KindEviction, &in.Common)
	in.Need, in.Free = d.u64(), d.u64()
	ne, ng, nw, nd := d.u32(), d.u32(), d.u32(), d.u32()
	if d.err == nil && nd != 0 && nd != ne {
		d.err = errors.New("policy abi: " + itoa(int64(nd)) + " demand values for " + itoa(int64(ne)) + " entries")
	}
	// One call per section, not per record: inside WASM a Go call costs
	// more than the read, and there are up to 256 ghosts.
	in.Entries = grow(in.Entries, d.count(ne, EntrySize))
	readEntryRecords(d, in.Entries)
	in.Ghosts = grow(in.Ghosts, d.count(ng, GhostSize))
	readGhostRecords(d, in.Ghosts)
	in.Wanted = grow(in.Wanted, d.count(nw, WantedSize))
	readWantedRecords(d, in.Wanted)
	in.RecentDemand = grow(in.RecentDemand, d.count(nd, 8))
	if r := d.rec(8 * len(in.RecentDemand)); r != nil {
		for i := range in.RecentDemand {
			in.RecentDemand[i] = math.Float64frombits(u64le(r[8*i:]))
		}
	}
	return done(d)
}

func appendOutHeader(e enc, st Status, k Kind, state *[4]uint64) enc {
	e = e.u32(uint32(st)).u32(uint32(k))
	for _, s := range state {
		e = e.u64(s)
	}
	return e
}

func readOutHeader(d *dec, k Kind, state *[4]uint64) Status {
	st := Status(d.u32())
	if got := Kind(d.u32()); d.err == nil && got != k {
		d.err = errors.New("policy abi: output is for " + got.String() + ", want " + k.String())
	}
	for i := range state {
		state[i] = d.u64()
	}
	return st
}

func appendU32s(e enc, v []uint32) enc {
	for _, x := range v {
		e = e.u32(x)
	}
	return e
}

func readU32s(d *dec, n uint32, dst []uint32) []uint32 {
	dst = grow(dst, d.count(n, 4))
	r := d.rec(4 * len(dst))
	for i := range dst {
		dst[i] = u32le(r[4*i:])
	}
	return dst
}

// AppendEvictionOutput appends an eviction hook's answer to dst.
func AppendEvictionOutput(dst []byte, st Status, out *EvictionOutput) []byte {
	e := appendOutHeader(enc(dst), st, KindEviction, &out.State)
	e = e.u32(uint32(len(out.Victims))).u32(uint32(len(out.Prefetch))).u32(uint32(len(out.Tags))).u32(0)
	e = appendU32s(appendU32s(e, out.Victims), out.Prefetch)
	for _, t := range out.Tags {
		e = e.u32(t.Entry).u32(0).u64(t.Tag)
	}
	return e
}

// DecodeEvictionOutput decodes an eviction hook's answer into out.
func DecodeEvictionOutput(b []byte, out *EvictionOutput) (Status, error) {
	d := &dec{b: b}
	st := readOutHeader(d, KindEviction, &out.State)
	nv, np, nt := d.u32(), d.u32(), d.u32()
	d.u32()
	out.Victims = readU32s(d, nv, out.Victims)
	out.Prefetch = readU32s(d, np, out.Prefetch)
	out.Tags = grow(out.Tags, d.count(nt, TagUpdateSize))
	for i := range out.Tags {
		out.Tags[i].Entry = d.u32()
		d.u32()
		out.Tags[i].Tag = d.u64()
	}
	return st, done(d)
}

// AppendSchedulingInput appends the binary snapshot of in to dst.
func AppendSchedulingInput(dst []byte, in *SchedulingInput) []byte {
	np := jobLists(in.Queued) + jobLists(in.Running) + workerLists(in.Workers)
	e := appendHeader(enc(dst), KindScheduling, &in.Common)
	e = e.u32(uint32(len(in.Queued))).u32(uint32(len(in.Running))).u32(uint32(len(in.Workers))).
		u32(uint32(len(in.Models))).u32(uint32(np)).u32(0)
	e = appendModels(e, in.Models)
	var p pool
	for i := range in.Queued {
		e = appendJobRecord(e, &in.Queued[i], &p)
	}
	for i := range in.Running {
		e = appendJobRecord(e, &in.Running[i], &p)
	}
	for i := range in.Workers {
		e = appendWorkerRecord(e, &in.Workers[i], &p)
	}
	e = appendJobLists(e, in.Queued)
	e = appendJobLists(e, in.Running)
	return appendWorkerLists(e, in.Workers)
}

// DecodeSchedulingInput decodes a snapshot into in, reusing its slices.
func DecodeSchedulingInput(b []byte, in *SchedulingInput) error {
	d := &dec{b: b}
	readHeader(d, KindScheduling, &in.Common)
	nq, nr, nw, nm, np := d.u32(), d.u32(), d.u32(), d.u32(), d.u32()
	d.u32()
	in.Models = readModels(d, nm, in.Models)
	in.Queued = grow(in.Queued, d.count(nq, JobSize))
	in.Running = grow(in.Running, d.count(nr, JobSize))
	in.Workers = grow(in.Workers, d.count(nw, WorkerSize))
	nq2, nr2 := jobListCount*len(in.Queued), jobListCount*(len(in.Queued)+len(in.Running))
	sp := grow(in.spans, nr2+workerListCount*len(in.Workers))
	in.spans = sp
	readJobRecords(d, in.Queued, sp[:nq2])
	readJobRecords(d, in.Running, sp[nq2:nr2])
	readWorkerRecords(d, in.Workers, sp[nr2:])
	p := readPool(d, np, in.pool, len(in.Models))
	in.pool = p
	setJobListsAll(d, p, in.Queued, sp[:nq2])
	setJobListsAll(d, p, in.Running, sp[nq2:nr2])
	setWorkerListsAll(d, p, in.Workers, sp[nr2:])
	return done(d)
}

// AppendSchedulingOutput appends a scheduling hook's answer to dst.
func AppendSchedulingOutput(dst []byte, st Status, out *SchedulingOutput) []byte {
	e := appendOutHeader(enc(dst), st, KindScheduling, &out.State)
	e = e.u32(uint32(len(out.Dispatch))).u32(uint32(len(out.Preempt)))
	return appendU32s(appendU32s(e, out.Dispatch), out.Preempt)
}

// DecodeSchedulingOutput decodes a scheduling hook's answer into out.
func DecodeSchedulingOutput(b []byte, out *SchedulingOutput) (Status, error) {
	d := &dec{b: b}
	st := readOutHeader(d, KindScheduling, &out.State)
	nd, np := d.u32(), d.u32()
	out.Dispatch = readU32s(d, nd, out.Dispatch)
	out.Preempt = readU32s(d, np, out.Preempt)
	return st, done(d)
}

// AppendBatchingInput appends the binary snapshot of in to dst.
func AppendBatchingInput(dst []byte, in *BatchingInput) []byte {
	np := jobLists(in.Jobs) + workerLists(in.Workers)
	e := appendHeader(enc(dst), KindBatching, &in.Common)
	e = e.u32(in.Lead).u32(uint32(len(in.Jobs))).u32(uint32(len(in.Workers))).u32(uint32(len(in.Models))).u32(uint32(np)).u32(0)
	e = appendModels(e, in.Models)
	var p pool
	for i := range in.Jobs {
		e = appendJobRecord(e, &in.Jobs[i], &p)
	}
	for i := range in.Workers {
		e = appendWorkerRecord(e, &in.Workers[i], &p)
	}
	e = appendJobLists(e, in.Jobs)
	return appendWorkerLists(e, in.Workers)
}

// DecodeBatchingInput decodes a snapshot into in, reusing its slices.
func DecodeBatchingInput(b []byte, in *BatchingInput) error {
	d := &dec{b: b}
	readHeader(d, KindBatching, &in.Common)
	in.Lead = d.u32()
	nj, nw, nm, np := d.u32(), d.u32(), d.u32(), d.u32()
	d.u32()
	in.Models = readModels(d, nm, in.Models)
	in.Jobs = grow(in.Jobs, d.count(nj, JobSize))
	in.Workers = grow(in.Workers, d.count(nw, WorkerSize))
	jn := jobListCount * len(in.Jobs)
	sp := grow(in.spans, jn+workerListCount*len(in.Workers))
	in.spans = sp
	js, ws := sp[:jn], sp[jn:]
	readJobRecords(d, in.Jobs, js)
	readWorkerRecords(d, in.Workers, ws)
	p := readPool(d, np, in.pool, len(in.Models))
	in.pool = p
	setJobListsAll(d, p, in.Jobs, js)
	setWorkerListsAll(d, p, in.Workers, ws)
	if d.err == nil && int(in.Lead) >= len(in.Jobs) {
		d.err = errors.New("policy abi: lead " + itoa(int64(in.Lead)) + " out of range (" + itoa(int64(len(in.Jobs))) + " jobs)")
	}
	return done(d)
}

// AppendBatchingOutput appends a batching hook's answer to dst.
func AppendBatchingOutput(dst []byte, st Status, out *BatchingOutput) []byte {
	e := appendOutHeader(enc(dst), st, KindBatching, &out.State)
	e = e.i64(int64(out.Wait)).u32(uint32(len(out.Batch))).u32(0)
	return appendU32s(e, out.Batch)
}

// DecodeBatchingOutput decodes a batching hook's answer into out.
func DecodeBatchingOutput(b []byte, out *BatchingOutput) (Status, error) {
	d := &dec{b: b}
	st := readOutHeader(d, KindBatching, &out.State)
	out.Wait = time.Duration(d.i64())
	n := d.u32()
	d.u32()
	out.Batch = readU32s(d, n, out.Batch)
	return st, done(d)
}

// AppendBalancingInput appends the binary snapshot of in to dst.
func AppendBalancingInput(dst []byte, in *BalancingInput) []byte {
	np := jobPoolLen(&in.Job) + workerLists(in.Workers)
	e := appendHeader(enc(dst), KindBalancing, &in.Common)
	e = e.u32(uint32(len(in.Workers))).u32(uint32(len(in.Models))).u32(uint32(np)).u32(0)
	e = appendModels(e, in.Models)
	var p pool
	e = appendJobRecord(e, &in.Job, &p)
	for i := range in.Workers {
		e = appendWorkerRecord(e, &in.Workers[i], &p)
	}
	e = appendJobPool(e, &in.Job)
	return appendWorkerLists(e, in.Workers)
}

// DecodeBalancingInput decodes a snapshot into in, reusing its slices.
func DecodeBalancingInput(b []byte, in *BalancingInput) error {
	d := &dec{b: b}
	readHeader(d, KindBalancing, &in.Common)
	nw, nm, np := d.u32(), d.u32(), d.u32()
	d.u32()
	in.Models = readModels(d, nm, in.Models)
	var js [jobListCount]span
	readJob(d, &in.Job, js[:])
	in.Workers = grow(in.Workers, d.count(nw, WorkerSize))
	ws := grow(in.spans, workerListCount*len(in.Workers))
	in.spans = ws
	readWorkerRecords(d, in.Workers, ws)
	p := readPool(d, np, in.pool, len(in.Models))
	in.pool = p
	setJobLists(d, p, &in.Job, js[:])
	setWorkerListsAll(d, p, in.Workers, ws)
	return done(d)
}

// AppendBalancingOutput appends a balancing hook's answer to dst.
func AppendBalancingOutput(dst []byte, st Status, out *BalancingOutput) []byte {
	return appendOutHeader(enc(dst), st, KindBalancing, &out.State).u32(out.Worker).u32(0)
}

// DecodeBalancingOutput decodes a balancing hook's answer into out.
func DecodeBalancingOutput(b []byte, out *BalancingOutput) (Status, error) {
	d := &dec{b: b}
	st := readOutHeader(d, KindBalancing, &out.State)
	out.Worker = d.u32()
	d.u32()
	return st, done(d)
}

// AppendRoutingInput appends the binary snapshot of in to dst (ABI 1.2,
// section 4.7): the body's counts and random word, the models, the job,
// the nodes, then the pool (the job's models, then each node's VRAM, RAM
// and disk lists in node order).
func AppendRoutingInput(dst []byte, in *RoutingInput) []byte {
	np := jobPoolLen(&in.Job)
	for i := range in.Nodes {
		np += nodePoolLen(&in.Nodes[i])
	}
	e := appendHeader(enc(dst), KindRouting, &in.Common)
	e = e.u32(uint32(len(in.Nodes))).u32(uint32(len(in.Models))).u32(uint32(np)).u32(0).u64(in.Random)
	e = appendModels(e, in.Models)
	var p pool
	e = appendJobRecord(e, &in.Job, &p)
	for i := range in.Nodes {
		e = appendNodeRecord(e, &in.Nodes[i], &p)
	}
	e = appendJobPool(e, &in.Job)
	for i := range in.Nodes {
		e = appendNodePool(e, &in.Nodes[i])
	}
	return e
}

// DecodeRoutingInput decodes a snapshot into in, reusing its slices.
func DecodeRoutingInput(b []byte, in *RoutingInput) error {
	d := &dec{b: b}
	readHeader(d, KindRouting, &in.Common)
	nn, nm, np := d.u32(), d.u32(), d.u32()
	d.u32()
	in.Random = d.u64()
	in.Models = readModels(d, nm, in.Models)
	var js [jobListCount]span
	readJob(d, &in.Job, js[:])
	in.Nodes = grow(in.Nodes, d.count(nn, NodeSize))
	// Three lists per node: VRAM, RAM and disk.
	spans := grow(in.spans, nodeListCount*len(in.Nodes))
	in.spans = spans
	readNodeRecords(d, in.Nodes, spans)
	p := readPool(d, np, in.pool, len(in.Models))
	in.pool = p
	setJobLists(d, p, &in.Job, js[:])
	setNodeListsAll(d, p, in.Nodes, spans)
	return done(d)
}

// AppendRoutingOutput appends a routing hook's answer to dst.
func AppendRoutingOutput(dst []byte, st Status, out *RoutingOutput) []byte {
	return appendOutHeader(enc(dst), st, KindRouting, &out.State).u32(out.Node).u32(0)
}

// DecodeRoutingOutput decodes a routing hook's answer into out.
func DecodeRoutingOutput(b []byte, out *RoutingOutput) (Status, error) {
	d := &dec{b: b}
	st := readOutHeader(d, KindRouting, &out.State)
	out.Node = d.u32()
	d.u32()
	return st, done(d)
}

// AppendParams appends the declaration table a module's kiln_params export
// returns.
func AppendParams(dst []byte, ps []Param) []byte {
	e := enc(dst).u32(uint32(len(ps))).u32(0)
	for _, p := range ps {
		var name [maxParamName]byte
		copy(name[:], p.Name)
		e = append(e, name[:]...)
		e = e.u32(uint32(p.Type)).u32(0).u64(math.Float64bits(p.Default)).u64(math.Float64bits(p.Min)).u64(math.Float64bits(p.Max))
	}
	return e
}

// DecodeParams decodes a declaration table and checks every declaration.
func DecodeParams(b []byte) ([]Param, error) {
	d := &dec{b: b}
	n := d.u32()
	d.u32()
	if n > maxParams {
		return nil, errors.New("policy abi: " + itoa(int64(n)) + " params, at most " + itoa(maxParams))
	}
	ps := make([]Param, d.count(n, ParamDeclSize))
	for i := range ps {
		if !d.need(maxParamName) {
			break
		}
		name := d.b[d.off : d.off+maxParamName]
		d.off += maxParamName
		end := 0
		for end < len(name) && name[end] != 0 {
			end++
		}
		ps[i].Name = string(name[:end])
		ps[i].Type = ParamType(d.u32())
		d.u32()
		ps[i].Default = math.Float64frombits(d.u64())
		ps[i].Min = math.Float64frombits(d.u64())
		ps[i].Max = math.Float64frombits(d.u64())
	}
	if err := done(d); err != nil {
		return nil, err
	}
	for _, p := range ps {
		if err := p.Validate(); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// Check reports whether v is a value the parameter accepts: a number
// within [Min, Max] that is whole for an int parameter and 0 or 1 for a
// bool one. The host applies it to every value an operator, the tuner or
// an experiment sets, so a policy can rely on the type it declared.
func (p Param) Check(v float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return errors.New("param " + p.Name + ": " + ftoa(v) + " is not a number")
	case p.Type == ParamInt && v != math.Trunc(v):
		return errors.New("param " + p.Name + ": " + ftoa(v) + " is not an integer (the parameter is an int)")
	case p.Type == ParamBool && v != 0 && v != 1:
		return errors.New("param " + p.Name + ": " + ftoa(v) + " is not 0 or 1 (the parameter is a bool)")
	case v < p.Min || v > p.Max:
		return errors.New("param " + p.Name + ": " + ftoa(v) + " is outside [" + ftoa(p.Min) + ", " + ftoa(p.Max) + "]")
	}
	return nil
}

// String is the parameter type's name: float, int or bool.
func (t ParamType) String() string {
	switch t {
	case ParamFloat:
		return "float"
	case ParamInt:
		return "int"
	case ParamBool:
		return "bool"
	}
	return "type " + itoa(int64(t))
}

// Validate checks a declaration: a name of [a-z0-9_.], a known type, and
// min ≤ default ≤ max.
func (p Param) Validate() error {
	if p.Name == "" || len(p.Name) > maxParamName {
		return errors.New("param " + strconv.Quote(p.Name) + ": name must be 1 to " + itoa(maxParamName) + " bytes")
	}
	for _, c := range p.Name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return errors.New("param " + strconv.Quote(p.Name) + ": name may hold only a-z, 0-9, _ and .")
		}
	}
	if p.Type > ParamBool {
		return errors.New("param " + p.Name + ": unknown type " + itoa(int64(p.Type)))
	}
	if math.IsNaN(p.Default) || math.IsNaN(p.Min) || math.IsNaN(p.Max) || p.Min > p.Default || p.Default > p.Max {
		return errors.New("param " + p.Name + ": want min ≤ default ≤ max, have " + ftoa(p.Min) + " ≤ " + ftoa(p.Default) + " ≤ " + ftoa(p.Max))
	}
	return nil
}
