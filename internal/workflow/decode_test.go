package workflow

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// referenceDecode is what Decode and Parse gave before decodeObject: a
// Decoder with UseNumber.
func referenceDecode(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// checkDecodeObject checks decodeObject against encoding/json on data:
// where it decodes, it must give encoding/json's value; it may leave any
// input to encoding/json, but not a plain object it can take.
func checkDecodeObject(t *testing.T, data []byte, mustTake bool) {
	t.Helper()
	got, ok := decodeObject(data)
	if !ok {
		if mustTake {
			t.Errorf("decodeObject(%q) left it to encoding/json", data)
		}
		return
	}
	want, err := referenceDecode(data)
	if err != nil {
		t.Fatalf("decodeObject(%q) = %v; encoding/json refuses it: %v", data, got, err)
	}
	if !reflect.DeepEqual(any(got), want) {
		t.Errorf("decodeObject(%q) =\n%#v; encoding/json gives\n%#v", data, got, want)
	}
	if rest := bytes.TrimLeft(data, " \t\r\n"); len(rest) > 0 {
		dec := json.NewDecoder(bytes.NewReader(rest))
		var v any
		_ = dec.Decode(&v)
		if _, err := dec.Token(); err == nil {
			t.Errorf("decodeObject(%q) took an input with data after the object", data)
		}
	}
}

func TestDecodeObject(t *testing.T) {
	files, err := filepath.Glob("../../examples/workflows/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example workflows: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkDecodeObject(t, raw, true)
	}
	for _, in := range []string{
		`{}`, ` {"a":[]} `, `{"a":{},"b":[{}],"c":[[],[1]]}`, `{"a":1,"a":2}`,
		`{"n":[0,-0,1.5,-2e10,3E+2,4e-2,123456789012345678901234567890]}`,
		`{"s":"esc \" \\ \/ \b \f \n \r \t end","t":"é 漢字 😀"}`,
		`{"t":true,"f":false,"z":null}`,
	} {
		checkDecodeObject(t, []byte(in), true)
	}
	// Left to encoding/json (or refused by it): never a different value.
	for _, in := range []string{
		``, `[]`, `null`, `"s"`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":1e}`,
		`{"a":.5}`, `{"a":tru}`, `{"a":"\u00e9"}`, `{"a":"\ud83d\ude00 \ud800"}`, `{"a":"bad \xff utf8"}`,
		`{"a":"ctl ` + "\x01" + `"}`, `{"a":"\x"}`, `{} x`, `{}{}`, `{"a":1}]`, "{\"a\":\"x\"\x00}",
		strings.Repeat(`{"a":`, 10001) + `1` + strings.Repeat(`}`, 10001),
		strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000),
	} {
		checkDecodeObject(t, []byte(in), false)
	}
}

// FuzzDecodeObject holds decodeObject to encoding/json on any input.
func FuzzDecodeObject(f *testing.F) {
	for _, s := range []string{`{"a":[1,"x",{"b":null}],"c":-1.5e3}`, `{"s":"a\"b\\u00e9\n"}`, `{"a":1} `, `{"a":"\ud800"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeObject(t, data, false)
	})
}

func BenchmarkDecode(b *testing.B) {
	raw, err := os.ReadFile("../../examples/workflows/salad-comfyui-api__sd1.5-txt2img.api.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAppendCompact checks AppendCompact against json.Compact on valid
// JSON: the example workflows, and values with whitespace, escapes and
// quotes inside strings.
func TestAppendCompact(t *testing.T) {
	files, _ := filepath.Glob("../../examples/workflows/*.json")
	inputs := []string{` { "a" : [ 1 , "x y\t\"z\\" , { } ] , "b\\\\" : "\\\\" } `, `"s"`, ` 12 `, "{\n\"a\":\r\n\t\"\\u00e9 é\"\n}"}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, string(raw))
	}
	for _, in := range inputs {
		var want bytes.Buffer
		if err := json.Compact(&want, []byte(in)); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := AppendCompact([]byte("prefix"), []byte(in)); string(got) != "prefix"+want.String() {
			t.Errorf("AppendCompact(%q) = %q; json.Compact gives %q", in, got[len("prefix"):], want.String())
		}
	}
}

// FuzzAppendCompact holds AppendCompact to json.Compact on valid JSON.
func FuzzAppendCompact(f *testing.F) {
	f.Add([]byte(` { "a" : [ 1 , "x \" y" ] } `))
	f.Fuzz(func(t *testing.T, data []byte) {
		var want bytes.Buffer
		if json.Compact(&want, data) != nil {
			return
		}
		if got := AppendCompact(nil, data); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("AppendCompact(%q) = %q; json.Compact gives %q", data, got, want.Bytes())
		}
	})
}
