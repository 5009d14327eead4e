package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// wire is how a field travels.
type wire int

const (
	wireU64  wire = iota // 8 bytes, unsigned
	wireI64              // 8 bytes, signed (durations in ns)
	wireU32              // 4 bytes
	wireFlag             // one bit of a u32 flags word
	wireList             // a u32 pool offset and a u32 count (8 bytes)
)

// field is one field of an ABI record, from its Go declaration and tags.
type field struct {
	name   string // Go name
	goType string // as declared: uint64, time.Duration, Class, bool, []uint32, …
	wire   wire
	off    int
	bit    int    // wireFlag: the bit of the flags word at off
	doc    string // the ABI.md field text
	ts     string // the AssemblyScript getter (wireList: the offset getter)
	tsN    string // wireList: the count getter
	since  int    // the minor version that added it (0: from the first)
}

func (f *field) width() int {
	switch f.wire {
	case wireU64, wireI64, wireList:
		return 8
	}
	return 4
}

// record is an ABI record type: a struct of sdk/policy/types.go whose doc
// comment holds an //abi:record directive.
type record struct {
	name   string // Go name
	ts     string // AssemblyScript class (and ABI.md) name
	size   int
	doc    string // the Go doc comment, directives removed
	fields []field
}

// lists are the record's list fields, in offset order (the order of their
// spans and of their elements in the pool).
func (r *record) lists() []field {
	var out []field
	for _, f := range r.fields {
		if f.wire == wireList {
			out = append(out, f)
		}
	}
	return out
}

// slot is one 4- or 8-byte place of a record's layout, in offset order.
type slot struct {
	off   int
	field *field   // a u64, i64, u32 or list field
	flags []*field // a flags word's bits
	// neither: reserved (written as zero)
}

// layout returns the record's slots from offset 0 to its size, reserved
// words filling the gaps, and checks that fields neither overlap nor
// leave their natural alignment.
func (r *record) layout() ([]slot, error) {
	var slots []slot
	byOff := map[int]int{}
	for i := range r.fields {
		f := &r.fields[i]
		// A list is two u32s, so 4-aligned like them.
		if align := min(f.width(), 4+4*boolInt(f.wire != wireList)); f.off%align != 0 {
			return nil, fmt.Errorf("%s.%s: offset %d is not a multiple of %d", r.name, f.name, f.off, align)
		}
		if f.wire == wireFlag {
			if j, ok := byOff[f.off]; ok && slots[j].flags != nil {
				for _, g := range slots[j].flags {
					if g.bit == f.bit {
						return nil, fmt.Errorf("%s.%s and %s: both flag bit %d at %d", r.name, g.name, f.name, f.bit, f.off)
					}
				}
				slots[j].flags = append(slots[j].flags, f)
				continue
			}
			byOff[f.off] = len(slots)
			slots = append(slots, slot{off: f.off, flags: []*field{f}})
			continue
		}
		byOff[f.off] = len(slots)
		slots = append(slots, slot{off: f.off, field: f})
	}
	slices.SortFunc(slots, func(a, b slot) int { return a.off - b.off })
	var out []slot
	at := 0
	for _, s := range slots {
		if s.off < at {
			return nil, fmt.Errorf("%s: the field at offset %d overlaps the one before it", r.name, s.off)
		}
		for ; at < s.off; at += 4 {
			out = append(out, slot{off: at})
		}
		slices.SortFunc(s.flags, func(a, b *field) int { return a.bit - b.bit })
		out = append(out, s)
		at = s.off + s.width()
	}
	if at > r.size {
		return nil, fmt.Errorf("%s: fields end at %d, past the record's size %d (a larger record is a major version)", r.name, at, r.size)
	}
	for ; at < r.size; at += 4 {
		out = append(out, slot{off: at})
	}
	return out, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *slot) width() int {
	if s.field != nil {
		return s.field.width()
	}
	return 4
}

// abiFile is what abigen reads of sdk/policy/types.go.
type abiFile struct {
	major, minor int
	records      []record
	// named maps the file's named integer types to their underlying type
	// (Class → uint32).
	named map[string]string
}

func parseABI(path string) (*abiFile, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	out := &abiFile{named: map[string]string{}}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok {
			continue
		}
		switch gd.Tok {
		case token.CONST:
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if n.Name != "ABIMajor" && n.Name != "ABIMinor" || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok {
						return nil, fmt.Errorf("%s: %s must be an integer literal", path, n.Name)
					}
					v, err := strconv.Atoi(lit.Value)
					if err != nil {
						return nil, fmt.Errorf("%s: %s: %w", path, n.Name, err)
					}
					if n.Name == "ABIMajor" {
						out.major = v
					} else {
						out.minor = v
					}
				}
			}
		case token.TYPE:
			for _, s := range gd.Specs {
				ts := s.(*ast.TypeSpec)
				if id, ok := ts.Type.(*ast.Ident); ok {
					out.named[ts.Name.Name] = id.Name
				}
				doc := ts.Doc
				if doc == nil {
					doc = gd.Doc
				}
				dir, ok := directive(doc, "//abi:record")
				if !ok {
					continue
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					return nil, fmt.Errorf("%s: %s has an abi:record directive but is not a struct", path, ts.Name.Name)
				}
				r, err := parseRecord(ts.Name.Name, dir, doc.Text(), st)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", path, err)
				}
				out.records = append(out.records, *r)
			}
		}
	}
	if out.major == 0 {
		return nil, fmt.Errorf("%s: no ABIMajor constant", path)
	}
	if len(out.records) == 0 {
		return nil, fmt.Errorf("%s: no struct carries an //abi:record directive", path)
	}
	for _, r := range out.records {
		for _, f := range r.fields {
			if f.since > out.minor {
				return nil, fmt.Errorf("%s.%s: since 1.%d, but ABIMinor is %d: raise ABIMinor", r.name, f.name, f.since, out.minor)
			}
			if f.wire == wireU32 && f.goType != "uint32" && out.named[f.goType] != "uint32" {
				return nil, fmt.Errorf("%s.%s: type %s does not travel as a u32", r.name, f.name, f.goType)
			}
		}
	}
	return out, nil
}

// directive returns the arguments of the comment line that starts with
// name in doc.
func directive(doc *ast.CommentGroup, name string) (string, bool) {
	if doc == nil {
		return "", false
	}
	for _, c := range doc.List {
		if rest, ok := strings.CutPrefix(c.Text, name); ok {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

// parseRecord reads a record's directive ("size=56 [ts=Model]") and its
// fields' tags:
//
//	abi:"OFFSET[,bit=N][,ts=getter][,tscount=getter][,since=1.M]"
//	doc:"the field's text in ABI.md's table"
//
// A bool field is a bit of the flags word at OFFSET; a []uint32 field is
// a list (pool offset and count); durations travel as i64 nanoseconds.
func parseRecord(name, dir, doc string, st *ast.StructType) (*record, error) {
	r := &record{name: name, ts: name, doc: strings.TrimSpace(doc)}
	for _, kv := range strings.Fields(dir) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "size":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("%s: abi:record size: %w", name, err)
			}
			r.size = n
		case "ts":
			r.ts = v
		default:
			return nil, fmt.Errorf("%s: abi:record: unknown setting %q", name, kv)
		}
	}
	if r.size == 0 || r.size%8 != 0 {
		return nil, fmt.Errorf("%s: abi:record needs size=N, a multiple of 8", name)
	}
	for _, fl := range st.Fields.List {
		if fl.Tag == nil {
			if len(fl.Names) == 0 || ast.IsExported(fl.Names[0].Name) {
				return nil, fmt.Errorf("%s: field %s has no abi tag", name, fieldName(fl))
			}
			continue // scratch, not on the wire
		}
		tag, _ := strconv.Unquote(fl.Tag.Value)
		st := reflect.StructTag(tag)
		spec, ok := st.Lookup("abi")
		if !ok {
			return nil, fmt.Errorf("%s.%s: no abi tag", name, fieldName(fl))
		}
		if len(fl.Names) != 1 {
			return nil, fmt.Errorf("%s: declare tagged fields one per line (%s)", name, fieldName(fl))
		}
		f := field{name: fl.Names[0].Name, goType: typeString(fl.Type), doc: st.Get("doc")}
		if f.doc == "" {
			return nil, fmt.Errorf("%s.%s: no doc tag (its text in ABI.md)", name, f.name)
		}
		parts := strings.Split(spec, ",")
		off, err := strconv.Atoi(parts[0])
		if err != nil {
			return nil, fmt.Errorf("%s.%s: abi tag %q: the offset: %w", name, f.name, spec, err)
		}
		f.off = off
		switch f.goType {
		case "uint64":
			f.wire = wireU64
		case "int64", "time.Duration":
			f.wire = wireI64
		case "bool":
			f.wire = wireFlag
		case "[]uint32":
			f.wire = wireList
		default:
			f.wire = wireU32
		}
		f.ts = lowerCamel(f.name)
		if f.goType == "time.Duration" {
			f.ts += "Ns"
		}
		if f.wire == wireList {
			f.tsN = f.ts + "Count"
			f.ts += "Offset"
		}
		bitSet := false
		for _, p := range parts[1:] {
			k, v, _ := strings.Cut(p, "=")
			switch k {
			case "bit":
				if f.bit, err = strconv.Atoi(v); err != nil || f.bit < 0 || f.bit > 31 {
					return nil, fmt.Errorf("%s.%s: bit %q: want 0 to 31", name, f.name, v)
				}
				bitSet = true
			case "ts":
				f.ts = v
			case "tscount":
				f.tsN = v
			case "since":
				minor, ok := strings.CutPrefix(v, "1.")
				if f.since, err = strconv.Atoi(minor); !ok || err != nil {
					return nil, fmt.Errorf("%s.%s: since %q: want 1.M", name, f.name, v)
				}
			default:
				return nil, fmt.Errorf("%s.%s: abi tag: unknown setting %q", name, f.name, p)
			}
		}
		if (f.wire == wireFlag) != bitSet {
			return nil, fmt.Errorf("%s.%s: a bool field, and only a bool field, needs bit=N", name, f.name)
		}
		r.fields = append(r.fields, f)
	}
	return r, nil
}

func fieldName(fl *ast.Field) string {
	if len(fl.Names) == 0 {
		return typeString(fl.Type)
	}
	var names []string
	for _, n := range fl.Names {
		names = append(names, n.Name)
	}
	return strings.Join(names, ", ")
}

func typeString(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.Ident:
		return t.Name
	case *ast.SelectorExpr:
		return typeString(t.X) + "." + t.Sel.Name
	case *ast.ArrayType:
		if t.Len == nil {
			return "[]" + typeString(t.Elt)
		}
		return "[" + typeString(t.Len) + "]" + typeString(t.Elt)
	case *ast.BasicLit:
		return t.Value
	case *ast.StarExpr:
		return "*" + typeString(t.X)
	}
	return fmt.Sprintf("%T", e)
}

// lowerCamel lowers a Go name's first word: VRAM → vram, BatchVRAM →
// batchVRAM, H2DBytesPerS → h2dBytesPerS, SinceUse → sinceUse.
func lowerCamel(s string) string {
	rs := []rune(s)
	n := 0
	for n < len(rs) && (rs[n] >= 'A' && rs[n] <= 'Z' || rs[n] >= '0' && rs[n] <= '9') {
		n++
	}
	switch {
	case n == len(rs):
	case n > 1:
		n-- // the last capital starts the next word: VRAMBytes → vramBytes
	}
	return strings.ToLower(string(rs[:n])) + string(rs[n:])
}

// view is a decision view (internal/decision) and the ABI record its
// fields feed.
type view struct {
	name, record string
	fields       []viewField
}

type viewField struct {
	name, goType string
	to           string // the record field it feeds: its abi tag, else its name; "-" for none
}

// views are the decision views whose same-named fields abigen copies into
// records; the adapters convert the rest by hand.
var views = []struct{ view, record string }{
	{"JobView", "Job"},
	{"WorkerView", "Worker"},
	{"NodeView", "Node"},
	{"EntryView", "Entry"},
}

func parseViews(dir string) ([]view, error) {
	pkgs, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	structs := map[string]*ast.StructType{}
	for _, path := range pkgs {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return nil, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if st, ok := ts.Type.(*ast.StructType); ok {
					structs[ts.Name.Name] = st
				}
			}
			return true
		})
	}
	path := dir
	var out []view
	for _, vr := range views {
		st := structs[vr.view]
		if st == nil {
			return nil, fmt.Errorf("%s: no struct %s", path, vr.view)
		}
		v := view{name: vr.view, record: vr.record}
		for _, fl := range st.Fields.List {
			to := ""
			if fl.Tag != nil {
				tag, _ := strconv.Unquote(fl.Tag.Value)
				to = reflect.StructTag(tag).Get("abi")
			}
			for _, n := range fl.Names {
				t := to
				if t == "" {
					t = n.Name
				}
				v.fields = append(v.fields, viewField{name: n.Name, goType: typeString(fl.Type), to: t})
			}
		}
		out = append(out, v)
	}
	return out, nil
}
