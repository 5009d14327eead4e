package config

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// kind says how a config key's value is shaped.
type kind int

const (
	leafKind   kind = iota // a scalar or a list of scalars
	structKind             // a section with fixed keys
	listKind               // a list of sections (devices.simulated)
	mapKind                // a section with free keys (cost.families)
)

// node describes the keys a config value may have, derived by reflection
// from the koanf tags of Config so that a section that grows a field needs
// no change here.
type node struct {
	kind   kind
	typ    reflect.Type
	fields map[string]*node // structKind
	keys   []string         // structKind: sorted field keys
	elem   *node            // listKind, mapKind
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// schema is the tree of Config's keys.
var schema = buildNode(reflect.TypeFor[Config]())

func buildNode(t reflect.Type) *node {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return &node{kind: leafKind, typ: t}
	}
	switch t.Kind() {
	case reflect.Struct:
		n := &node{kind: structKind, typ: t, fields: map[string]*node{}}
		addFields(n, t)
		for k := range n.fields {
			n.keys = append(n.keys, k)
		}
		sort.Strings(n.keys)
		return n
	case reflect.Slice, reflect.Array:
		if e := buildNode(t.Elem()); e.kind != leafKind {
			return &node{kind: listKind, typ: t, elem: e}
		}
	case reflect.Map:
		if t.Key().Kind() == reflect.String {
			return &node{kind: mapKind, typ: t, elem: buildNode(t.Elem())}
		}
	}
	return &node{kind: leafKind, typ: t}
}

// addFields adds t's exported fields to n under their koanf keys; untagged
// fields use their lower-cased name and ",squash" fields are flattened, as
// mapstructure decodes them.
func addFields(n *node, t reflect.Type) {
	for f := range fieldsOf(t) {
		name, squash := f.key, f.squash
		if squash && f.typ.Kind() == reflect.Struct {
			addFields(n, f.typ)
			continue
		}
		n.fields[name] = buildNode(f.typ)
	}
}

type fieldInfo struct {
	index  int
	key    string
	typ    reflect.Type
	squash bool
}

// fieldsOf yields the config fields of struct type t in declaration order.
func fieldsOf(t reflect.Type) func(yield func(fieldInfo) bool) {
	return func(yield func(fieldInfo) bool) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("koanf")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			squash := slices.Contains(strings.Split(opts, ","), "squash")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if !yield(fieldInfo{index: i, key: name, typ: f.Type, squash: squash}) {
				return
			}
		}
	}
}

// join appends key to path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// unknownKey says that key is not allowed under path and lists what is.
func unknownKey(path, key string, n *node) error {
	where := "at top level"
	if path != "" {
		where = "under " + path
	}
	return fmt.Errorf("unknown key %q (allowed %s: %s)", join(path, key), where, strings.Join(n.keys, ", "))
}

// lookup returns the node of a dotted key path such as "queue.max_attempts".
func lookup(path string) (*node, error) {
	n, at := schema, ""
	for part := range strings.SplitSeq(path, ".") {
		switch n.kind {
		case structKind:
			c, ok := n.fields[part]
			if !ok {
				return nil, unknownKey(at, part, n)
			}
			n = c
		case mapKind:
			n = n.elem
		case listKind:
			return nil, fmt.Errorf("%s is a list: set it whole, e.g. %s=[{...}, {...}]", at, at)
		default:
			return nil, fmt.Errorf("unknown key %q (%s is a value, not a section)", path, at)
		}
		at = join(at, part)
	}
	if path == "" {
		return nil, fmt.Errorf("empty key")
	}
	return n, nil
}

// check verifies that v, the value at path, has only known keys and values
// of the right types. nil values mean "not set" and pass.
func (n *node) check(path string, v any) error {
	if v == nil {
		return nil
	}
	switch n.kind {
	case structKind, mapKind:
		m, ok := v.(map[string]any)
		if !ok {
			if n.kind == structKind {
				return fmt.Errorf("%s: want a section with keys %s, got %s", path, strings.Join(n.keys, ", "), show(v))
			}
			return fmt.Errorf("%s: want a section, got %s", path, show(v))
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c := n.elem
			if n.kind == structKind {
				if c = n.fields[k]; c == nil {
					return unknownKey(path, k, n)
				}
			}
			if err := c.check(join(path, k), m[k]); err != nil {
				return err
			}
		}
		return nil
	case listKind:
		l, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want a list, got %s", path, show(v))
		}
		for i, e := range l {
			if err := n.elem.check(fmt.Sprintf("%s[%d]", path, i), e); err != nil {
				return err
			}
		}
		return nil
	}
	dst := reflect.New(n.typ)
	dec, err := mapstructure.NewDecoder(decoderConfig(dst.Interface()))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: cannot parse %s as %s", path, show(v), typeName(n.typ))
	}
	return nil
}

// show renders a value for an error message: strings quoted, the rest as
// Go prints them.
func show(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	switch v.(type) {
	case map[string]any:
		return "a section"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%q", fmt.Sprint(v))
}

// typeName names a leaf type in words an operator knows.
func typeName(t reflect.Type) string {
	if t == durationType {
		return `duration (e.g. "2s", "1m30s")`
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "int"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "unsigned int"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "bool"
	case reflect.String:
		return "string"
	case reflect.Slice, reflect.Array:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "section of " + typeName(t.Elem())
	}
	return t.String()
}

// decoderConfig is how every config value is decoded: weakly typed so that
// env and --set strings convert, with strict durations and integers.
func decoderConfig(result any) *mapstructure.DecoderConfig {
	return &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			integerHook,
			mapstructure.TextUnmarshallerHookFunc(),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		TagName:          "koanf",
		Result:           result,
	}
}

// durationHook parses "2s" into a time.Duration and refuses a bare number
// other than 0, which would silently mean nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		return time.ParseDuration(strings.TrimSpace(v))
	case time.Duration:
		return v, nil
	case int, int64, uint64, float64:
		if reflect.ValueOf(v).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("a duration needs a unit")
	}
	return data, nil
}

// integerHook refuses floats with a fraction or out of range for integer
// keys, which mapstructure would truncate, and negative numbers for unsigned
// keys, which it would wrap around.
func integerHook(from, to reflect.Type, data any) (any, error) {
	if rv := reflect.ValueOf(data); rv.CanInt() && rv.Int() < 0 && to.Kind() >= reflect.Uint && to.Kind() <= reflect.Uintptr {
		// Weakly typed decoding would wrap -1 around to 2^64-1.
		return nil, fmt.Errorf("negative")
	}
	f, ok := data.(float64)
	if !ok {
		return data, nil
	}
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return nil, fmt.Errorf("not an integer")
		}
		return int64(f), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if f != math.Trunc(f) || f < 0 || f >= math.MaxUint64 {
			return nil, fmt.Errorf("not an unsigned integer")
		}
		return uint64(f), nil
	}
	return data, nil
}

// normalize turns the map[any]any that YAML yields for non-string keys into
// map[string]any, recursively.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
		return x
	}
	return v
}

// dropNils removes keys with a nil value, so that a section left empty in
// YAML ("cost:" with every key commented out) means "not set" instead of
// wiping the layer below.
func dropNils(m map[string]any) map[string]any {
	for k, v := range m {
		switch x := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			m[k] = dropNils(x)
		}
	}
	return m
}
