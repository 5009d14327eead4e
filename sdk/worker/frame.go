package worker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxDepth bounds how deeply maps and arrays may nest inside a frame. The
// decoders recurse, so an unbounded depth would let a small hostile frame
// exhaust the stack (a fatal error in Go, not a recoverable panic).
const MaxDepth = 64

// Frame errors. ReadFrame and DecodeBody wrap them, so compare with errors.Is.
var (
	// ErrFrameSize reports a length prefix of zero or above MaxFrameBytes.
	ErrFrameSize = errors.New("frame length out of range")
	// ErrMalformedFrame reports a frame whose content is not a valid header
	// followed by a valid body.
	ErrMalformedFrame = errors.New("malformed frame")

	// ErrEncodeBody reports a WriteFrame body that msgpack cannot encode.
	// Like ErrMalformedFrame and ErrFrameSize it means nothing was written,
	// so the connection is still usable.
	ErrEncodeBody = errors.New("encode body")
)

// frameBuf is a pooled encode buffer with an encoder bound to it.
type frameBuf struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

// maxPooledBuf keeps rare large frames from pinning memory in the pool.
const maxPooledBuf = 64 << 10

var frameBufPool = sync.Pool{New: func() any {
	fb := &frameBuf{}
	fb.enc = msgpack.NewEncoder(&fb.buf)
	fb.enc.SetCustomStructTag("msgpack")
	fb.enc.UseCompactInts(true)
	return fb
}}

func putFrameBuf(fb *frameBuf) {
	if fb.buf.Cap() > maxPooledBuf {
		return
	}
	frameBufPool.Put(fb)
}

// WriteFrame encodes one frame (length prefix, header, body) and writes it
// with a single Write call, so that writers sharing a connection under a
// mutex never interleave frames. body is encoded with msgpack (structs as
// maps keyed by their msgpack tags); it must encode to a map or be nil, in
// which case an empty map is sent. A msgpack.RawMessage body is sent as is.
func WriteFrame(w io.Writer, h Header, body any) error {
	if h.Type == "" {
		return fmt.Errorf("write frame: %w: empty type", ErrMalformedFrame)
	}
	fb := frameBufPool.Get().(*frameBuf)
	defer putFrameBuf(fb)
	fb.buf.Reset()
	b := fb.buf.AvailableBuffer()
	b = append(b, 0, 0, 0, 0)
	b = appendHeader(b, h)
	fb.buf.Write(b)
	bodyStart := fb.buf.Len()
	switch v := body.(type) {
	case nil:
		fb.buf.WriteByte(0x80)
	case msgpack.RawMessage:
		if len(v) == 0 {
			fb.buf.WriteByte(0x80)
		} else {
			fb.buf.Write(v)
		}
	default:
		if err := fb.enc.Encode(body); err != nil {
			return fmt.Errorf("write frame %s %d: %w: %w", h.Type, h.ID, ErrEncodeBody, err)
		}
	}
	out := fb.buf.Bytes()
	if !isMapOrNil(out[bodyStart]) {
		return fmt.Errorf("write frame %s %d: %w: body is not a map", h.Type, h.ID, ErrMalformedFrame)
	}
	n := len(out) - 4
	if n > MaxFrameBytes {
		return fmt.Errorf("write frame %s %d: %w: %d bytes", h.Type, h.ID, ErrFrameSize, n)
	}
	binary.BigEndian.PutUint32(out, uint32(n))
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("write frame %s %d: %w", h.Type, h.ID, err)
	}
	return nil
}

// appendHeader appends the canonical header encoding: a two-entry map with
// "id" first (the most compact unsigned integer form) and "type" second.
func appendHeader(b []byte, h Header) []byte {
	b = append(b, 0x82, 0xa2, 'i', 'd')
	switch {
	case h.ID <= 0x7f:
		b = append(b, byte(h.ID))
	case h.ID <= math.MaxUint8:
		b = append(b, 0xcc, byte(h.ID))
	case h.ID <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(h.ID))
	case h.ID <= math.MaxUint32:
		b = binary.BigEndian.AppendUint32(append(b, 0xce), uint32(h.ID))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0xcf), h.ID)
	}
	b = append(b, 0xa4, 't', 'y', 'p', 'e')
	return appendString(b, h.Type)
}

func appendString(b []byte, s string) []byte {
	switch n := len(s); {
	case n <= 31:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func isMapOrNil(c byte) bool {
	return c == 0xc0 || c&0xf0 == 0x80 || c == 0xde || c == 0xdf
}

// ReadFrame reads one frame and returns its header and its body (a map or
// nil, as raw msgpack owned by the caller; decode it with DecodeBody). It
// checks the length prefix before allocating and validates the whole frame:
// the header must hold a non-negative integer "id" and a non-empty string
// "type" (other header keys are ignored), the body must be a map or nil,
// nesting is bounded by MaxDepth, and no bytes may follow the body.
//
// At a clean frame boundary a closed stream yields io.EOF itself; a stream
// that ends inside a frame yields an error wrapping io.ErrUnexpectedEOF.
// Any other error means the stream can no longer be trusted.
func ReadFrame(r *bufio.Reader) (Header, msgpack.RawMessage, error) {
	// Peek and Discard rather than io.ReadFull into a local array, which
	// would escape through the io.Reader interface: one allocation per
	// frame on both ends of every round trip.
	lenBuf, err := r.Peek(4)
	if err != nil {
		if err == io.EOF && len(lenBuf) == 0 {
			return Header{}, nil, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, nil, fmt.Errorf("read frame length: %w", err)
	}
	n := binary.BigEndian.Uint32(lenBuf)
	_, _ = r.Discard(4) // the 4 bytes are buffered: Peek returned them
	if n == 0 || n > MaxFrameBytes {
		return Header{}, nil, fmt.Errorf("read frame: %w: %d bytes", ErrFrameSize, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, nil, fmt.Errorf("read frame body: %w", err)
	}
	return parseFrame(buf)
}

// ParseFrame splits and validates a frame's payload (the bytes after the
// 4-byte length prefix) as ReadFrame does, for a reader that gathers the
// payload itself — e.g. one whose reads can be interrupted by a deadline and
// must resume inside a frame. The body aliases buf.
func ParseFrame(buf []byte) (Header, msgpack.RawMessage, error) {
	return parseFrame(buf)
}

// parseFrame splits and validates a frame's payload (the bytes after the
// length prefix).
func parseFrame(buf []byte) (Header, msgpack.RawMessage, error) {
	h, rest, err := parseHeader(buf)
	if err != nil {
		return Header{}, nil, fmt.Errorf("read frame: %w: header: %w", ErrMalformedFrame, err)
	}
	if len(rest) == 0 {
		return Header{}, nil, fmt.Errorf("read frame %s %d: %w: missing body", h.Type, h.ID, ErrMalformedFrame)
	}
	if !isMapOrNil(rest[0]) {
		return Header{}, nil, fmt.Errorf("read frame %s %d: %w: body is not a map", h.Type, h.ID, ErrMalformedFrame)
	}
	end, err := skipValue(rest, 0, 0)
	if err != nil {
		return Header{}, nil, fmt.Errorf("read frame %s %d: %w: body: %w", h.Type, h.ID, ErrMalformedFrame, err)
	}
	if end != len(rest) {
		return Header{}, nil, fmt.Errorf("read frame %s %d: %w: %d trailing bytes", h.Type, h.ID, ErrMalformedFrame, len(rest)-end)
	}
	return h, msgpack.RawMessage(rest), nil
}

var errTruncated = errors.New("truncated value")

func parseHeader(b []byte) (Header, []byte, error) {
	n, p, err := readMapLen(b, 0)
	if err != nil {
		return Header{}, nil, err
	}
	var h Header
	var haveID, haveType bool
	for range n {
		var key []byte
		if key, p, err = readStr(b, p); err != nil {
			return Header{}, nil, fmt.Errorf("key: %w", err)
		}
		switch string(key) {
		case "id":
			if h.ID, p, err = readUint(b, p); err != nil {
				return Header{}, nil, fmt.Errorf("id: %w", err)
			}
			haveID = true
		case "type":
			var typ []byte
			if typ, p, err = readStr(b, p); err != nil {
				return Header{}, nil, fmt.Errorf("type: %w", err)
			}
			h.Type = internType(typ)
			haveType = true
		default:
			if p, err = skipValue(b, p, 1); err != nil {
				return Header{}, nil, fmt.Errorf("key %q: %w", key, err)
			}
		}
	}
	switch {
	case !haveID:
		return Header{}, nil, errors.New("missing id")
	case !haveType || h.Type == "":
		return Header{}, nil, errors.New("missing type")
	}
	return h, b[p:], nil
}

// internType returns the constant for a known message type so that reading
// a frame does not allocate a string for it.
func internType(b []byte) string {
	for _, t := range knownTypes {
		if string(b) == t {
			return t
		}
	}
	return string(b)
}

var knownTypes = [...]string{TypeProgress, TypeResult, TypeOK, TypeError, TypePing,
	TypeRun, TypeCancel, TypeStats, TypeLoad, TypeUnload, TypeHello}

// need returns the n bytes at p or errTruncated.
func need(b []byte, p, n int) ([]byte, error) {
	if n < 0 || len(b)-p < n {
		return nil, errTruncated
	}
	return b[p : p+n], nil
}

func readMapLen(b []byte, p int) (int, int, error) {
	if p >= len(b) {
		return 0, p, errTruncated
	}
	c := b[p]
	p++
	switch {
	case c&0xf0 == 0x80:
		return int(c & 0x0f), p, nil
	case c == 0xde:
		v, err := need(b, p, 2)
		if err != nil {
			return 0, p, err
		}
		return int(binary.BigEndian.Uint16(v)), p + 2, nil
	case c == 0xdf:
		v, err := need(b, p, 4)
		if err != nil {
			return 0, p, err
		}
		return int(binary.BigEndian.Uint32(v)), p + 4, nil
	}
	return 0, p, fmt.Errorf("want map, got code 0x%02x", c)
}

func readStr(b []byte, p int) ([]byte, int, error) {
	if p >= len(b) {
		return nil, p, errTruncated
	}
	c := b[p]
	p++
	var n int
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xda || c == 0xdb:
		w := 1 << (c - 0xd9) // 1, 2 or 4 length bytes
		v, err := need(b, p, w)
		if err != nil {
			return nil, p, err
		}
		n = int(beUint(v))
		p += w
	default:
		return nil, p, fmt.Errorf("want string, got code 0x%02x", c)
	}
	s, err := need(b, p, n)
	if err != nil {
		return nil, p, err
	}
	return s, p + n, nil
}

func readUint(b []byte, p int) (uint64, int, error) {
	if p >= len(b) {
		return 0, p, errTruncated
	}
	c := b[p]
	p++
	if c <= 0x7f {
		return uint64(c), p, nil
	}
	var w int
	signed := false
	switch c {
	case 0xcc, 0xcd, 0xce, 0xcf:
		w = 1 << (c - 0xcc)
	case 0xd0, 0xd1, 0xd2, 0xd3:
		w, signed = 1<<(c-0xd0), true
	default:
		return 0, p, fmt.Errorf("want unsigned integer, got code 0x%02x", c)
	}
	v, err := need(b, p, w)
	if err != nil {
		return 0, p, err
	}
	u := beUint(v)
	if signed && v[0]&0x80 != 0 {
		return 0, p, errors.New("negative integer")
	}
	return u, p + w, nil
}

func beUint(v []byte) uint64 {
	var u uint64
	for _, x := range v {
		u = u<<8 | uint64(x)
	}
	return u
}

// skipValue returns the offset just past the msgpack value at p. It never
// allocates, rejects nesting deeper than MaxDepth, and checks every length
// against the bytes left, so a hostile length cannot cause a large
// allocation in a later decode.
func skipValue(b []byte, p, depth int) (int, error) {
	if depth > MaxDepth {
		return p, fmt.Errorf("nesting deeper than %d", MaxDepth)
	}
	if p >= len(b) {
		return p, errTruncated
	}
	c := b[p]
	p++
	var items, skip int // items: nested values to skip; skip: raw bytes to skip
	switch {
	case c <= 0x7f || c >= 0xe0: // fixint
	case c <= 0x8f:
		items = 2 * int(c&0x0f)
	case c <= 0x9f:
		items = int(c & 0x0f)
	case c <= 0xbf:
		skip = int(c & 0x1f)
	case c == 0xc0 || c == 0xc2 || c == 0xc3:
	case c == 0xc1:
		return p, errors.New("reserved code 0xc1")
	default:
		var lenBytes int
		switch c {
		case 0xc4, 0xd9: // bin8, str8
			lenBytes = 1
		case 0xc5, 0xda: // bin16, str16
			lenBytes = 2
		case 0xc6, 0xdb: // bin32, str32
			lenBytes = 4
		case 0xc7, 0xc8, 0xc9: // ext8/16/32: length then type byte
			lenBytes = 1 << (c - 0xc7)
		case 0xca, 0xce, 0xd2: // float32, uint32, int32
			skip = 4
		case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
			skip = 8
		case 0xcc, 0xd0: // uint8, int8
			skip = 1
		case 0xcd, 0xd1: // uint16, int16
			skip = 2
		case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1..16 plus type byte
			skip = 1 + 1<<(c-0xd4)
		case 0xdc, 0xdd: // array16/32
			lenBytes = 2 << (c - 0xdc)
		case 0xde, 0xdf: // map16/32
			lenBytes = 2 << (c - 0xde)
		}
		if lenBytes > 0 {
			v, err := need(b, p, lenBytes)
			if err != nil {
				return p, err
			}
			p += lenBytes
			n := beUint(v)
			if n > uint64(len(b)) {
				return p, errTruncated
			}
			switch c {
			case 0xdc, 0xdd:
				items = int(n)
			case 0xde, 0xdf:
				items = 2 * int(n)
			case 0xc7, 0xc8, 0xc9:
				skip = int(n) + 1
			default:
				skip = int(n)
			}
		}
	}
	if skip > 0 {
		if _, err := need(b, p, skip); err != nil {
			return p, err
		}
		p += skip
	}
	if items > len(b)-p { // every value takes at least one byte
		return p, errTruncated
	}
	for range items {
		var err error
		if p, err = skipValue(b, p, depth+1); err != nil {
			return p, err
		}
	}
	return p, nil
}

// bodyDecoder is a pooled decoder over a byte slice.
type bodyDecoder struct {
	rd  bytes.Reader
	dec *msgpack.Decoder
}

var bodyDecoderPool = sync.Pool{New: func() any {
	return &bodyDecoder{dec: msgpack.NewDecoder(nil)}
}}

// DecodeBody decodes a frame body into v, a pointer. Struct fields are
// matched by their msgpack tags; unknown keys are ignored, so newer peers may
// add fields. Values decoded into an interface (map[string]any, []any, any)
// come out JSON-like: maps as map[string]any at every depth, arrays as
// []any, integers as int64 (uint64 only above math.MaxInt64, whichever
// integer encoding the sender chose), floats as float64, strings as string.
// A nil body leaves v unchanged.
func DecodeBody(raw msgpack.RawMessage, v any) error {
	end, err := skipValue(raw, 0, 0)
	if err != nil {
		return fmt.Errorf("decode body: %w: %w", ErrMalformedFrame, err)
	}
	if end != len(raw) {
		return fmt.Errorf("decode body: %w: %d trailing bytes", ErrMalformedFrame, len(raw)-end)
	}
	if raw[0] == 0xc0 {
		return nil
	}
	bd := bodyDecoderPool.Get().(*bodyDecoder)
	defer bodyDecoderPool.Put(bd)
	bd.rd.Reset(raw)
	bd.dec.Reset(&bd.rd)
	bd.dec.SetCustomStructTag("msgpack")
	bd.dec.UseLooseInterfaceDecoding(true)
	err = bd.dec.Decode(v)
	bd.dec.Reset(nil)
	bd.rd.Reset(nil)
	if err != nil {
		return fmt.Errorf("decode body: %w", err)
	}
	normalize(reflect.ValueOf(v))
	return nil
}

// ifaceTypes caches, per type, whether values of it can hold interfaces that
// need normalizing after decoding.
var ifaceTypes sync.Map // reflect.Type → bool

func holdsIface(t reflect.Type) bool {
	if v, ok := ifaceTypes.Load(t); ok {
		return v.(bool)
	}
	ifaceTypes.Store(t, false) // breaks cycles in recursive types
	var r bool
	switch t.Kind() {
	case reflect.Interface:
		r = true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		r = holdsIface(t.Elem())
	case reflect.Map:
		r = holdsIface(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && holdsIface(f.Type) {
				r = true
			}
		}
	}
	ifaceTypes.Store(t, r)
	return r
}

// normalize rewrites, in place, unsigned integers held in interfaces to
// int64 where they fit, so that decoded JSON-like values do not depend on
// whether the sender chose a signed or an unsigned encoding.
func normalize(v reflect.Value) {
	if !holdsIface(v.Type()) {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			normalize(v.Elem())
		}
	case reflect.Interface:
		if !v.IsNil() && v.CanSet() {
			if n := normalizeAny(v.Elem().Interface()); n != nil {
				v.Set(reflect.ValueOf(n))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			normalize(v.Index(i))
		}
	case reflect.Map:
		if m, ok := v.Interface().(map[string]any); ok {
			normalizeMap(m)
			return
		}
		it := v.MapRange()
		for it.Next() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(it.Value())
			normalize(e)
			v.SetMapIndex(it.Key(), e)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				normalize(v.Field(i))
			}
		}
	}
}

// normalizeAny returns the replacement for x, or nil to keep x.
func normalizeAny(x any) any {
	switch x := x.(type) {
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
	case map[string]any:
		normalizeMap(x)
	case []any:
		for i, e := range x {
			if n := normalizeAny(e); n != nil {
				x[i] = n
			}
		}
	}
	return nil
}

func normalizeMap(m map[string]any) {
	for k, e := range m {
		if n := normalizeAny(e); n != nil {
			m[k] = n
		}
	}
}
