package job

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The write-ahead log in front of the bbolt index (RATIONALE.md, "The log
// is the durability point"). A change is durable once its record is in a
// log segment and that segment has been fdatasync'd; the bbolt file catches
// up afterwards, off the path every caller waits on.
//
// A segment is a file named <db>.wal.<16 hex digits of its generation>,
// starting with walMagic and followed by records:
//
//	u32 length of the body | u32 CRC-32C of the body | body
//	body: u64 lsn | kind ('p' put, 'x' delete) | u64 seq | state code | u16 len(id) | id | job JSON (puts)
//
// The lsn is the commit (batch) that wrote the record; the bbolt file keeps
// the last lsn it has applied (meta key keyAppliedLSN), so replay skips what
// bbolt already has and a segment that outlived its deletion does no harm.
// Segments are fresh files, never reused, made full of zeros; records end at
// the first one that does not check out: zeros, or a torn write at the tail
// of the newest segment, whose batch was never acknowledged.

const (
	walMagic = "KILNWAL1"
	// walSegmentBytes is the size past which the committer starts a new
	// segment, so that the indexer can delete the old one once bbolt has it.
	walSegmentBytes = 4 << 20
	walHeaderBytes  = 8
	walFixedBody    = 8 + 1 + 8 + 1 + 2
	walMaxRecord    = 1 << 30

	recPut    = 'p'
	recDelete = 'x'
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// logRecord is one change to one job: its new stored form, or its deletion.
type logRecord struct {
	lsn   uint64
	del   bool
	seq   uint64
	state byte // codeOfState; 0 for a delete
	id    string
	data  []byte // the job as JSON; nil for a delete
}

// appendRecord appends r's framed encoding to buf.
func appendRecord(buf []byte, r *logRecord) []byte {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0) // length and CRC, filled below
	buf = binary.LittleEndian.AppendUint64(buf, r.lsn)
	kind := byte(recPut)
	if r.del {
		kind = recDelete
	}
	buf = append(buf, kind)
	buf = binary.LittleEndian.AppendUint64(buf, r.seq)
	buf = append(buf, r.state)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(r.id)))
	buf = append(buf, r.id...)
	buf = append(buf, r.data...)
	body := buf[start+8:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(body, crcTable))
	return buf
}

// errTornRecord marks the end of the readable part of a segment.
var errTornRecord = errors.New("torn or corrupt log record")

// readRecord decodes the record at the start of b and returns it with its
// framed size. The record's id and data alias b.
func readRecord(b []byte) (logRecord, int, error) {
	if len(b) < 8 {
		return logRecord{}, 0, errTornRecord
	}
	n := int(binary.LittleEndian.Uint32(b))
	sum := binary.LittleEndian.Uint32(b[4:])
	if n < walFixedBody || n > walMaxRecord || len(b)-8 < n {
		return logRecord{}, 0, errTornRecord
	}
	body := b[8 : 8+n]
	if crc32.Checksum(body, crcTable) != sum {
		return logRecord{}, 0, errTornRecord
	}
	r := logRecord{lsn: binary.LittleEndian.Uint64(body)}
	switch body[8] {
	case recPut:
	case recDelete:
		r.del = true
	default:
		return logRecord{}, 0, errTornRecord
	}
	r.seq = binary.LittleEndian.Uint64(body[9:])
	r.state = body[17]
	idLen := int(binary.LittleEndian.Uint16(body[18:]))
	if walFixedBody+idLen > n {
		return logRecord{}, 0, errTornRecord
	}
	r.id = string(body[walFixedBody : walFixedBody+idLen])
	if !r.del {
		r.data = body[walFixedBody+idLen:]
		if _, ok := stateOfCode(r.state); !ok {
			return logRecord{}, 0, errTornRecord
		}
	}
	return r, 8 + n, nil
}

// segment is one log file.
type segment struct {
	gen  uint64
	path string
}

func segmentPath(dbPath string, gen uint64) string {
	return fmt.Sprintf("%s.wal.%016x", dbPath, gen)
}

// listSegments returns dbPath's log segments in generation order.
func listSegments(dbPath string) ([]segment, error) {
	dir, base := filepath.Split(dbPath)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list log segments: %w", err)
	}
	var out []segment
	for _, e := range ents {
		hex, ok := strings.CutPrefix(e.Name(), base+".wal.")
		if !ok || len(hex) != 16 {
			continue
		}
		gen, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		out = append(out, segment{gen: gen, path: filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(out, func(a, b segment) int {
		switch {
		case a.gen < b.gen:
			return -1
		case a.gen > b.gen:
			return 1
		}
		return 0
	})
	return out, nil
}

// readSegment returns the records of one segment. A record that does not
// check out ends the segment; last says whether that is allowed (only the
// newest segment can have a torn tail).
func readSegment(seg segment, last bool) ([]logRecord, error) {
	data, err := os.ReadFile(seg.path)
	if err != nil {
		return nil, fmt.Errorf("read log %s: %w", seg.path, err)
	}
	if len(data) < walHeaderBytes {
		if last {
			return nil, nil // created, header not yet durable
		}
		return nil, fmt.Errorf("log %s: %d bytes, shorter than its header", seg.path, len(data))
	}
	if string(data[:walHeaderBytes]) != walMagic {
		return nil, fmt.Errorf("log %s: not a kiln job log (bad magic)", seg.path)
	}
	var recs []logRecord
	for off := walHeaderBytes; off < len(data); {
		r, n, err := readRecord(data[off:])
		if err != nil {
			// The records end here. In the newest segment anything may
			// follow (a torn write of a batch never acknowledged); in an
			// older one only the zeros it was made with.
			if !last && slices.ContainsFunc(data[off:], func(b byte) bool { return b != 0 }) {
				return nil, fmt.Errorf("log %s: offset %d: %w", seg.path, off, err)
			}
			break
		}
		recs = append(recs, r)
		off += n
	}
	return recs, nil
}

// logWriter appends batches to the active segment. Only the committer uses
// it.
//
// Segments are made in advance, full of zeros, by a goroutine of their own:
// appending then overwrites blocks the file already has, so the fdatasync
// that makes a batch durable flushes data only. Appending to a growing file
// would change its size with every batch, and on ext4 each such fdatasync
// waits for a journal commit, which also flushes the bbolt file's dirty
// pages the indexer is writing: measured, 9–13 ms per batch instead of
// 0.5 ms. A zero length field ends the records, so the zeros read as "no
// more records".
type logWriter struct {
	dbPath string
	// noSync skips the fdatasync of each append (WithoutSync).
	noSync bool
	gen    uint64 // generation of the active (or last) segment
	f      *os.File
	size   int64 // bytes of header and records in the active segment
	// next receives the segment being prepared, generation gen+1; nil when
	// none is being prepared.
	next chan preparedSegment
	// broken is set when a failed write could not be undone: nothing more
	// may be appended, because the file's tail is unknown.
	broken error
}

type preparedSegment struct {
	f   *os.File
	err error
}

// prepare starts making segment gen+1 in the background.
func (l *logWriter) prepare() {
	ch := make(chan preparedSegment, 1)
	l.next = ch
	path := segmentPath(l.dbPath, l.gen+1)
	go func() {
		f, err := createSegment(path)
		ch <- preparedSegment{f: f, err: err}
	}()
}

// zeroBlock is what createSegment fills a new segment with; never written to.
var zeroBlock = make([]byte, 256<<10)

// createSegment writes a new segment of walSegmentBytes: the header, then
// zeros. The file and its directory entry are made durable, so that records
// synced into it survive a power loss too.
func createSegment(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create log segment: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, err
	}
	// The zeros are written from one shared block rather than a fresh
	// 4 MiB buffer per segment: under load a segment fills every second
	// or two, and 4 MiB of garbage each time was 2 KB per submitted job
	// for the garbage collector.
	if _, err := f.Write([]byte(walMagic)); err != nil {
		return fail(fmt.Errorf("write log segment: %w", err))
	}
	for off := int64(len(walMagic)); off < walSegmentBytes; {
		n := min(int64(len(zeroBlock)), walSegmentBytes-off)
		if _, err := f.Write(zeroBlock[:n]); err != nil {
			return fail(fmt.Errorf("write log segment: %w", err))
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync log segment: %w", err))
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fail(err)
	}
	if _, err := f.Seek(walHeaderBytes, io.SeekStart); err != nil {
		return fail(fmt.Errorf("seek log segment: %w", err))
	}
	return f, nil
}

// open makes the prepared segment (or, if none is being prepared, a new
// one) active.
func (l *logWriter) open() error {
	if l.next == nil {
		l.prepare()
	}
	p := <-l.next // the preparing goroutine always sends, once
	l.next = nil
	if p.err != nil {
		return p.err
	}
	l.gen++
	l.f, l.size = p.f, walHeaderBytes
	return nil
}

// append writes buf to the active segment and fdatasyncs it. On failure it
// zeroes what it wrote, so that a batch reported as failed cannot come back
// at replay; if that fails too, the log refuses every later append.
func (l *logWriter) append(buf []byte) error {
	if l.broken != nil {
		return l.broken
	}
	if l.f == nil {
		if err := l.open(); err != nil {
			return err
		}
	}
	_, err := l.f.WriteAt(buf, l.size)
	if err == nil && !l.noSync {
		err = fdatasync(l.f)
	}
	if err != nil {
		if _, zerr := l.f.WriteAt(make([]byte, len(buf)), l.size); zerr != nil {
			l.broken = fmt.Errorf("job log unusable after a failed write (%w; undo: %w)", err, zerr)
		} else if serr := l.f.Sync(); serr != nil {
			l.broken = fmt.Errorf("job log unusable after a failed write (%w; sync: %w)", err, serr)
		}
		return fmt.Errorf("append to job log: %w", err)
	}
	l.size += int64(len(buf))
	if l.next == nil && l.size > walSegmentBytes/2 {
		// Half full: have the next segment ready before it is needed.
		l.prepare()
	}
	return nil
}

// rotate closes the active segment when it is (nearly) full and returns
// it, for the indexer to delete once bbolt has its records; the next append
// takes the prepared segment.
func (l *logWriter) rotate() (segment, bool) {
	if l.f == nil || l.size < walSegmentBytes*7/8 {
		return segment{}, false
	}
	return l.closeActive(), true
}

// closeActive closes the active segment (if any) and returns it.
func (l *logWriter) closeActive() segment {
	if l.f == nil {
		return segment{}
	}
	seg := segment{gen: l.gen, path: l.f.Name()}
	_ = l.f.Close() // every byte in it was synced by append
	l.f = nil
	return seg
}

// close closes the active segment, returning it, and removes the prepared
// one, which holds no records.
func (l *logWriter) close() segment {
	seg := l.closeActive()
	if l.next != nil {
		if p := <-l.next; p.f != nil {
			_ = p.f.Close()
			_ = os.Remove(p.f.Name())
		}
		l.next = nil
	}
	return seg
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
