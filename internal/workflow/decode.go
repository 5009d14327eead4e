package workflow

import (
	"encoding/json"
	"unicode/utf8"
)

// decodeObject decodes data, a JSON object and nothing after it but
// whitespace, into what encoding/json's Decoder with UseNumber makes of
// it: map[string]any, []any (empty, not nil, for []), string,
// json.Number, bool and nil; duplicate keys keep the last value. It
// reports false for anything else, and for anything it leaves to
// encoding/json (strings with \u escapes or invalid UTF-8, nesting past
// encoding/json's limit, any syntax error): the caller then decodes with
// encoding/json, which gives the same value or its own error.
//
// Every submit decodes its workflow once (Decode, Parse); encoding/json's
// reflective decoder, with a Decoder, its buffer and scanner per call,
// was the largest part of a submit's CPU. FuzzDecodeObject holds this
// decoder to encoding/json's results.
func decodeObject(data []byte) (map[string]any, bool) {
	d := fastDecoder{data: data}
	d.space()
	if d.i >= len(d.data) || d.data[d.i] != '{' {
		return nil, false
	}
	v, ok := d.object(0)
	if !ok {
		return nil, false
	}
	d.space()
	if d.i != len(d.data) {
		return nil, false
	}
	return v, true
}

// maxDepth is encoding/json's nesting limit; deeper input goes to it.
const maxDepth = 10000

type fastDecoder struct {
	data []byte
	i    int
}

func (d *fastDecoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *fastDecoder) value(depth int) (any, bool) {
	if d.i >= len(d.data) {
		return nil, false
	}
	switch c := d.data[d.i]; {
	case c == '{':
		m, ok := d.object(depth)
		return m, ok
	case c == '[':
		return d.array(depth)
	case c == '"':
		s, ok := d.string()
		return s, ok
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	}
	return nil, false
}

func (d *fastDecoder) literal(lit string) bool {
	if len(d.data)-d.i < len(lit) || string(d.data[d.i:d.i+len(lit)]) != lit {
		return false
	}
	d.i += len(lit)
	return true
}

// object decodes the object at d.i, which starts with '{'.
func (d *fastDecoder) object(depth int) (map[string]any, bool) {
	if depth++; depth > maxDepth {
		return nil, false
	}
	d.i++
	m := map[string]any{}
	d.space()
	if d.i < len(d.data) && d.data[d.i] == '}' {
		d.i++
		return m, true
	}
	for {
		if d.i >= len(d.data) || d.data[d.i] != '"' {
			return nil, false
		}
		k, ok := d.key()
		if !ok {
			return nil, false
		}
		d.space()
		if d.i >= len(d.data) || d.data[d.i] != ':' {
			return nil, false
		}
		d.i++
		d.space()
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		m[k] = v
		d.space()
		if d.i >= len(d.data) {
			return nil, false
		}
		switch d.data[d.i] {
		case ',':
			d.i++
			d.space()
		case '}':
			d.i++
			return m, true
		default:
			return nil, false
		}
	}
}

// array decodes the array at d.i, which starts with '['.
func (d *fastDecoder) array(depth int) ([]any, bool) {
	if depth++; depth > maxDepth {
		return nil, false
	}
	d.i++
	a := make([]any, 0)
	d.space()
	if d.i < len(d.data) && d.data[d.i] == ']' {
		d.i++
		return a, true
	}
	for {
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		a = append(a, v)
		d.space()
		if d.i >= len(d.data) {
			return nil, false
		}
		switch d.data[d.i] {
		case ',':
			d.i++
			d.space()
		case ']':
			d.i++
			return a, true
		default:
			return nil, false
		}
	}
}

// key decodes an object's key: the members every node has, and the
// inputs most graphs have, are the constant strings, not a copy each.
func (d *fastDecoder) key() (string, bool) {
	if end := d.i + 1 + 24; end <= len(d.data) {
		if q := indexQuote(d.data[d.i+1 : end]); q >= 0 {
			if k, ok := internedKeys[string(d.data[d.i+1:d.i+1+q])]; ok {
				d.i += q + 2
				return k, true
			}
		}
	}
	return d.string()
}

// indexQuote is the index of the first '"' in b if no '\\' comes before
// it, else -1.
func indexQuote(b []byte) int {
	for i, c := range b {
		switch c {
		case '"':
			return i
		case '\\':
			return -1
		}
	}
	return -1
}

// internedKeys are the keys key hands out as constants.
var internedKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"class_type", "inputs", "_meta", "title", "seed", "steps", "cfg", "sampler_name", "scheduler",
		"denoise", "model", "positive", "negative", "latent_image", "clip", "text", "vae", "samples",
		"images", "filename_prefix", "width", "height", "batch_size", "ckpt_name", "noise_seed"} {
		m[k] = k
	}
	return m
}()

// string decodes the string at d.i, which starts with '"'. Strings that
// are valid UTF-8 without escapes, nearly all of a graph's, are taken as
// they are; the short escapes (\n, \", ...) are undone here; a string
// with a \u escape or invalid UTF-8 goes to encoding/json alone.
func (d *fastDecoder) string() (string, bool) {
	start := d.i + 1
	ascii, escaped := true, false
	i := start
	for ; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			break
		}
		switch {
		case c < 0x20:
			return "", false
		case c == '\\':
			escaped = true
			i++ // the escaped byte; a quote there does not end the string
			if i >= len(d.data) {
				return "", false
			}
		case c >= 0x80:
			ascii = false
		}
	}
	if i >= len(d.data) {
		return "", false
	}
	raw := d.data[start:i]
	d.i = i + 1
	if !ascii && !utf8.Valid(raw) {
		return d.stringByJSON(start-1, i+1)
	}
	if !escaped {
		return string(raw), true
	}
	out := make([]byte, 0, len(raw))
	for j := 0; j < len(raw); j++ {
		c := raw[j]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		j++
		switch raw[j] {
		case '"', '\\', '/':
			out = append(out, raw[j])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			return d.stringByJSON(start-1, i+1)
		default:
			return "", false
		}
	}
	return string(out), true
}

// stringByJSON decodes the quoted string data[from:to] with encoding/json,
// which replaces invalid UTF-8 and pairs surrogates as it does everywhere.
func (d *fastDecoder) stringByJSON(from, to int) (string, bool) {
	var s string
	if json.Unmarshal(d.data[from:to], &s) != nil {
		return "", false
	}
	return s, true
}

// number takes the number at d.i as a json.Number, if it has JSON's
// grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *fastDecoder) number() (any, bool) {
	start := d.i
	digits := func() int {
		n := 0
		for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	if d.data[d.i] == '-' {
		d.i++
	}
	if d.i >= len(d.data) {
		return nil, false
	}
	if d.data[d.i] == '0' {
		d.i++
	} else if digits() == 0 {
		return nil, false
	}
	if d.i < len(d.data) && d.data[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return nil, false
		}
	}
	if d.i < len(d.data) && (d.data[d.i] == 'e' || d.data[d.i] == 'E') {
		d.i++
		if d.i < len(d.data) && (d.data[d.i] == '+' || d.data[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	return json.Number(d.data[start:d.i]), true
}

// AppendCompact appends src to dst without the whitespace between its
// tokens, as json.Compact does, for a src that is known to be one valid
// JSON value: the json.RawMessage of a request body encoding/json has
// already scanned (both APIs' graphs). It only tells strings from the rest
// and copies, where json.Compact runs its full scanner again; given
// invalid JSON its result is unspecified.
func AppendCompact(dst, src []byte) []byte {
	inString := false
	start := 0 // of the run of bytes to copy
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case inString:
			switch c {
			case '\\':
				i++ // the escaped byte, a quote or not
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			dst = append(dst, src[start:i]...)
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}
