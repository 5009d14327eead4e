package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Export names the instrumenter adds. The dots keep them apart from any
// name a Go or AssemblyScript module can export.
const (
	deadlineExport = "kiln.deadline"
	startExport    = "kiln.start"
)

// instrument returns a copy of a WASM binary whose loops count down a fuel
// global at their heads and, each time it runs out, check a deadline
// global (exported as kiln.deadline) and trap with unreachable once the
// host has set it. That is the per-call deadline: the host's watchdog sets
// the global of an instance whose call has run too long, so arming and
// disarming a deadline costs a call nothing.
//
// wazero's own mechanism, WithCloseOnContextDone, starts a goroutine per
// call and compiles every loop head into an indirect call to a trampoline;
// measured on these guests, that made a decision 2–8× slower than the same
// code without it (BENCHMARKS.md). The fuel check is a load, an add, a
// store and a branch.
//
// A loop is the only way WASM code runs unboundedly without calling out
// (recursion ends in a stack overflow, host calls return), so checking loop
// heads bounds every call. A start section is removed and its function
// exported as kiln.start instead, so that the host runs it under the
// watchdog too. DWARF sections are dropped: their code offsets no longer
// hold.
//
// The code is walked instruction by instruction (immediates are skipped,
// not interpreted); an opcode it does not know is an error, so a module
// can never carry a loop the walk missed.
func instrument(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || binary.LittleEndian.Uint32(wasm[4:8]) != 1 {
		return nil, errors.New("not a WASM 1.0 binary")
	}
	type section struct {
		id   byte
		body []byte
	}
	var secs []section
	for r := (reader{b: wasm, off: 8}); r.off < len(r.b); {
		id := r.byte()
		n := r.u32()
		body := r.bytes(int(n))
		if r.err != nil {
			return nil, fmt.Errorf("section %d: %w", id, r.err)
		}
		secs = append(secs, section{id, body})
	}
	var importedGlobals, definedGlobals uint32
	var start = -1
	var startFunc uint32
	hasMemory := false
	for i, s := range secs {
		switch s.id {
		case 5:
			r := reader{b: s.body}
			hasMemory = r.u32() > 0
		case 2:
			n, mem, err := countGlobalImports(s.body)
			if err != nil {
				return nil, fmt.Errorf("import section: %w", err)
			}
			importedGlobals = n
			hasMemory = hasMemory || mem
		case 6:
			r := reader{b: s.body}
			definedGlobals = r.u32()
			if r.err != nil {
				return nil, fmt.Errorf("global section: %w", r.err)
			}
		case 8:
			r := reader{b: s.body}
			startFunc = r.u32()
			if r.err != nil {
				return nil, fmt.Errorf("start section: %w", r.err)
			}
			start = i
		}
	}
	fuel := importedGlobals + definedGlobals
	dl := fuel + 1
	check := fuelCheck(fuel, dl, hasMemory)
	newGlobals := []byte{
		0x7f, 0x01, 0x41, 0x80, 0x80, 0x01, 0x0b, // fuel: mut i32 = fuelPerCheck
		0x7f, 0x01, 0x41, 0x00, 0x0b, // deadline: mut i32 = 0
	}

	out := make([]byte, 0, len(wasm)+len(wasm)/16+64)
	out = append(out, wasm[:8]...)
	emit := func(id byte, body []byte) {
		out = append(out, id)
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	wroteGlobal, wroteExport := false, false
	// Sections after the global section in the binary's fixed order: the
	// new global section goes before the first of them when there is none.
	after := map[byte]bool{7: true, 8: true, 9: true, 10: true, 11: true, 12: true}
	for i, s := range secs {
		if !wroteGlobal && after[s.id] {
			emit(6, append([]byte{2}, newGlobals...))
			wroteGlobal = true
		}
		switch {
		case s.id == 0:
			r := reader{b: s.body}
			name := r.name()
			if r.err == nil && strings.HasPrefix(name, ".debug") {
				continue
			}
			emit(s.id, s.body)
		case s.id == 6:
			r := reader{b: s.body}
			n := r.u32()
			body := binary.AppendUvarint(nil, uint64(n)+2)
			body = append(body, s.body[r.off:]...)
			emit(6, append(body, newGlobals...))
			wroteGlobal = true
		case s.id == 7:
			r := reader{b: s.body}
			n := r.u32()
			extra := uint64(1)
			if start >= 0 {
				extra++
			}
			body := binary.AppendUvarint(nil, uint64(n)+extra)
			body = append(body, s.body[r.off:]...)
			body = appendExport(body, deadlineExport, 3, dl)
			if start >= 0 {
				body = appendExport(body, startExport, 0, startFunc)
			}
			emit(7, body)
			wroteExport = true
		case i == start:
			// dropped: exported as kiln.start instead
		case s.id == 10:
			body, err := instrumentCode(s.body, check)
			if err != nil {
				return nil, fmt.Errorf("code section: %w", err)
			}
			emit(10, body)
		default:
			emit(s.id, s.body)
		}
	}
	if !wroteExport {
		return nil, errors.New("module has no export section")
	}
	if !wroteGlobal {
		emit(6, append([]byte{2}, newGlobals...))
	}
	return out, nil
}

func appendExport(b []byte, name string, kind byte, index uint32) []byte {
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = append(b, kind)
	return binary.AppendUvarint(b, uint64(index))
}

// fuelPerCheck is how many loop iterations run between two checks of the
// deadline. 16384 iterations take some 10–100 µs.
const fuelPerCheck = 16384

// fuelCheck is the code put at every loop head: fuel counts down, and when
// it runs out the loop calls memory.grow(0) and checks the deadline.
//
// memory.grow is there for Go's sake, not WASM's: wazero runs a guest on a
// goroutine that Go's scheduler cannot preempt while it is in compiled
// WASM code, so a guest that never leaves it would stall every
// stop-the-world of the host's garbage collector, the watchdog included,
// and with it the host. memory.grow(0) changes nothing but returns to Go
// for a moment, where the goroutine can be stopped.
func fuelCheck(fuel, deadline uint32, hasMemory bool) []byte {
	c := binary.AppendUvarint([]byte{0x23}, uint64(fuel)) // global.get fuel
	c = append(c, 0x41, 0x7f, 0x6a, 0x24)                 // i32.const -1; i32.add; global.set
	c = binary.AppendUvarint(c, uint64(fuel))
	c = append(c, 0x23) // global.get fuel
	c = binary.AppendUvarint(c, uint64(fuel))
	c = append(c, 0x45, 0x04, 0x40) // i32.eqz; if
	if hasMemory {
		c = append(c, 0x41, 0x00, 0x40, 0x00, 0x1a) // i32.const 0; memory.grow 0; drop
	}
	c = append(c, 0x41, 0x80, 0x80, 0x01, 0x24) // i32.const fuelPerCheck; global.set fuel
	c = binary.AppendUvarint(c, uint64(fuel))
	c = append(c, 0x23) // global.get deadline
	c = binary.AppendUvarint(c, uint64(deadline))
	return append(c, 0x04, 0x40, 0x00, 0x0b, 0x0b) // if; unreachable; end; end
}

// countGlobalImports counts the imported globals (they come first in the
// global index space) and says whether a memory is imported.
func countGlobalImports(b []byte) (uint32, bool, error) {
	r := reader{b: b}
	n := r.count()
	var globals uint32
	mem := false
	for range n {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case 0: // func
			r.u32()
		case 1: // table
			r.leb() // reftype (a byte, or a heap type in newer encodings)
			r.limits()
		case 2: // memory
			r.limits()
			mem = true
		case 3: // global
			r.leb()
			r.byte()
			globals++
		case 4: // tag
			r.byte()
			r.u32()
		default:
			return 0, false, fmt.Errorf("unknown import kind %#x", kind)
		}
		if r.err != nil {
			return 0, false, r.err
		}
	}
	return globals, mem, r.err
}

// instrumentCode rewrites the code section: each body gets check after
// every loop opcode.
func instrumentCode(b []byte, check []byte) ([]byte, error) {
	r := reader{b: b}
	n := r.count()
	out := binary.AppendUvarint(make([]byte, 0, len(b)+len(b)/16), uint64(n))
	var body []byte
	for i := range n {
		size := r.u32()
		code := r.bytes(int(size))
		if r.err != nil {
			return nil, fmt.Errorf("function %d: %w", i, r.err)
		}
		var err error
		body, err = instrumentBody(body[:0], code, check)
		if err != nil {
			return nil, fmt.Errorf("function %d: %w", i, err)
		}
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	if r.off != len(b) {
		return nil, errors.New("trailing bytes")
	}
	return out, nil
}

func instrumentBody(dst, code, check []byte) ([]byte, error) {
	r := reader{b: code}
	groups := r.count()
	for range groups {
		r.u32()
		r.leb() // value type
	}
	if r.err != nil {
		return nil, fmt.Errorf("locals: %w", r.err)
	}
	last := 0
	for r.off < len(code) && r.err == nil {
		at := r.off
		op := r.byte()
		switch {
		case op == 0x03: // loop
			r.blockType()
			dst = append(dst, code[last:r.off]...)
			dst = append(dst, check...)
			last = r.off
		case op == 0x02 || op == 0x04 || op == 0x06: // block, if, try
			r.blockType()
		case op <= 0x01 || op == 0x05 || op == 0x0a || op == 0x0b || op == 0x0f || op == 0x19 || op == 0x1a || op == 0x1b || op == 0xd1:
		case op >= 0x45 && op <= 0xc4: // numeric, no immediates
		case op == 0x07 || op == 0x08 || op == 0x09 || op == 0x0c || op == 0x0d || op == 0x10 || op == 0x12 ||
			op == 0x14 || op == 0x15 || op == 0x18 || op >= 0x20 && op <= 0x26 || op == 0x3f || op == 0x40 || op == 0xd2:
			r.leb()
		case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
			r.leb()
			r.leb()
		case op == 0x0e: // br_table
			for range r.count() + 1 {
				r.leb()
			}
		case op == 0x1c: // select t*
			for range r.count() {
				r.leb()
			}
		case op == 0x1f: // try_table
			r.blockType()
			for range r.count() {
				if k := r.byte(); k <= 1 {
					r.leb()
				}
				r.leb()
			}
		case op >= 0x28 && op <= 0x3e:
			r.memarg()
		case op == 0x41 || op == 0x42 || op == 0xd0:
			r.leb()
		case op == 0x43:
			r.bytes(4)
		case op == 0x44:
			r.bytes(8)
		case op == 0xfc:
			switch sub := r.u32(); {
			case sub <= 7:
			case sub == 8 || sub == 10 || sub == 12 || sub == 14:
				r.leb()
				r.leb()
			case sub <= 17:
				r.leb()
			default:
				return nil, fmt.Errorf("unknown opcode 0xfc %d at %d", sub, at)
			}
		case op == 0xfd:
			switch sub := r.u32(); {
			case sub <= 11 || sub == 92 || sub == 93:
				r.memarg()
			case sub == 12 || sub == 13:
				r.bytes(16)
			case sub >= 21 && sub <= 34:
				r.byte()
			case sub >= 84 && sub <= 91:
				r.memarg()
				r.byte()
			}
		case op == 0xfe:
			if sub := r.u32(); sub == 3 {
				r.byte()
			} else {
				r.memarg()
			}
		default:
			return nil, fmt.Errorf("unknown opcode %#x at %d", op, at)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return append(dst, code[last:]...), nil
}

// reader reads a WASM binary; the first error sticks and later reads
// return zero.
type reader struct {
	b   []byte
	off int
	err error
}

var errTruncated = errors.New("truncated")

func (r *reader) byte() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.err = errTruncated
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || len(r.b)-r.off < n {
		r.err = errTruncated
		return nil
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b
}

// leb skips a LEB128 number of any width, signed or not, and returns its
// low bits read as unsigned.
func (r *reader) leb() uint64 {
	var v uint64
	for shift := 0; ; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		if c&0x80 == 0 {
			return v
		}
		if shift > 70 {
			r.err = errors.New("LEB128 number too long")
			return 0
		}
	}
}

func (r *reader) u32() uint32 {
	v := r.leb()
	if v > 1<<32-1 && r.err == nil {
		r.err = errors.New("u32 out of range")
	}
	return uint32(v)
}

// count reads a vector's length. Every element takes at least one byte,
// so a length beyond the bytes left is an error at once, not billions of
// iterations over a failed reader (a fuzzed seven-byte body declaring 2^32
// local groups kept the instrumenter busy for a minute).
func (r *reader) count() uint32 {
	n := r.u32()
	if r.err == nil && int64(n) > int64(len(r.b)-r.off) {
		r.err = errors.New("vector longer than its section")
		return 0
	}
	if r.err != nil {
		return 0
	}
	return n
}

func (r *reader) name() string { return string(r.bytes(int(r.u32()))) }

func (r *reader) limits() {
	flags := r.byte()
	r.leb()
	if flags&1 != 0 {
		r.leb()
	}
}

func (r *reader) memarg() {
	if align := r.u32(); align&0x40 != 0 { // multi-memory: a memory index follows
		r.leb()
	}
	r.leb()
}

// blockType skips a block type: 0x40, a value type, or a type index (s33).
func (r *reader) blockType() {
	if r.off < len(r.b) {
		switch c := r.b[r.off]; c {
		case 0x40, 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
			r.off++
			return
		}
	}
	r.leb()
}
