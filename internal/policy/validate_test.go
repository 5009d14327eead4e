package policy

import (
	"context"
	"errors"
	"strings"
	"testing"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// wasmFunc is one function of a hand-assembled test module.
type wasmFunc struct {
	module, name string // import when module != ""
	params       []byte
	results      []byte
}

func leb(n int) []byte {
	var out []byte
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n != 0 {
			out = append(out, b|0x80)
			continue
		}
		return append(out, b)
	}
}

func vec(items ...[]byte) []byte {
	out := leb(len(items))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func str(s string) []byte { return append(leb(len(s)), s...) }

func section(id byte, body []byte) []byte {
	return append(append([]byte{id}, leb(len(body))...), body...)
}

// assemble builds a minimal module: imports, exported functions whose
// bodies return zeros, and an exported memory. It needs no toolchain.
func assemble(imports, exports []wasmFunc) []byte {
	var types, imps, funcs, exps, codes [][]byte
	typeOf := func(f wasmFunc) int {
		types = append(types, append(append([]byte{0x60}, vec(splitBytes(f.params)...)...), vec(splitBytes(f.results)...)...))
		return len(types) - 1
	}
	for _, f := range imports {
		imps = append(imps, append(append(str(f.module), str(f.name)...), append([]byte{0x00}, leb(typeOf(f))...)...))
	}
	for i, f := range exports {
		funcs = append(funcs, leb(typeOf(f)))
		exps = append(exps, append(str(f.name), append([]byte{0x00}, leb(len(imports)+i)...)...))
		body := []byte{0x00} // no locals
		for _, r := range f.results {
			switch r {
			case 0x7f:
				body = append(body, 0x41, 0x00)
			case 0x7e:
				body = append(body, 0x42, 0x00)
			}
		}
		body = append(body, 0x0b)
		codes = append(codes, append(leb(len(body)), body...))
	}
	exps = append(exps, append(str("memory"), 0x02, 0x00))
	m := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	m = append(m, section(1, vec(types...))...)
	if len(imps) > 0 {
		m = append(m, section(2, vec(imps...))...)
	}
	m = append(m, section(3, vec(funcs...))...)
	m = append(m, section(5, vec([]byte{0x00, 0x01}))...)
	m = append(m, section(7, vec(exps...))...)
	m = append(m, section(10, vec(codes...))...)
	return m
}

func splitBytes(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

const (
	tI32 = 0x7f
	tI64 = 0x7e
)

func baseExports(marker string) []wasmFunc {
	return []wasmFunc{
		{name: marker},
		{name: "kiln_buffer", params: []byte{tI32}, results: []byte{tI32}},
		{name: "kiln_schedule", params: []byte{tI32}, results: []byte{tI64}},
	}
}

func TestValidateRejects(t *testing.T) {
	h := newTestHost(t, Config{})
	for _, tc := range []struct {
		name    string
		imports []wasmFunc
		exports []wasmFunc
		want    string
		is      error
	}{
		{name: "newer major ABI", exports: baseExports("kiln_abi_v2_0"), want: "speaks policy ABI 2.0", is: ErrABIVersion},
		{name: "newer minor ABI", exports: baseExports("kiln_abi_v1_9"), want: "speaks policy ABI 1.9", is: ErrABIVersion},
		{name: "no marker", exports: baseExports("hello"), want: "no ABI marker", is: ErrABIVersion},
		{name: "forbidden WASI import", imports: []wasmFunc{{module: "wasi_snapshot_preview1", name: "path_open",
			params: []byte{tI32, tI32, tI32, tI32, tI32, tI64, tI64, tI32, tI32}, results: []byte{tI32}}},
			exports: baseExports("kiln_abi_v1_0"), want: "imports wasi_snapshot_preview1.path_open"},
		{name: "socket import", imports: []wasmFunc{{module: "wasi_snapshot_preview1", name: "sock_accept",
			params: []byte{tI32, tI32, tI32}, results: []byte{tI32}}},
			exports: baseExports("kiln_abi_v1_0"), want: "sock_accept"},
		{name: "unknown host import", imports: []wasmFunc{{module: "env", name: "system", params: []byte{tI32}}},
			exports: baseExports("kiln_abi_v1_0"), want: "imports env.system"},
		{name: "bad hook signature", exports: []wasmFunc{{name: "kiln_abi_v1_0"},
			{name: "kiln_buffer", params: []byte{tI32}, results: []byte{tI32}},
			{name: "kiln_schedule", params: []byte{tI32}, results: []byte{tI32}}}, want: "must be (i32)->(i64)"},
		{name: "missing hook", exports: []wasmFunc{{name: "kiln_abi_v1_0"},
			{name: "kiln_buffer", params: []byte{tI32}, results: []byte{tI32}}}, want: "does not export kiln_schedule"},
		{name: "reserved export", exports: append(baseExports("kiln_abi_v1_0"), wasmFunc{name: "kiln.foo"}),
			want: `module exports function "kiln.foo": export names starting with "kiln." are reserved`},
		{name: "reserved export the host adds", exports: append(baseExports("kiln_abi_v1_0"), wasmFunc{name: "kiln.start"}),
			want: `"kiln.start": export names starting with "kiln." are reserved`},
		{name: "import signature says what is wanted", imports: []wasmFunc{{module: "kiln", name: "log", params: []byte{tI64}, results: []byte{tI32}}},
			exports: baseExports("kiln_abi_v1_0"), want: "import kiln.log has signature (i64)->(i32); want (i32,i32,i32)->()"},
		{name: "kiln_buffer signature", exports: []wasmFunc{{name: "kiln_abi_v1_0"},
			{name: "kiln_buffer", params: []byte{tI64}, results: []byte{tI32}},
			{name: "kiln_schedule", params: []byte{tI32}, results: []byte{tI64}}}, want: "kiln_buffer with signature (i32)->(i32); it has (i64)->(i32)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.Load(context.Background(), abi.KindScheduling, "x", assemble(tc.imports, tc.exports), true, "test")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("load: %v; want an error containing %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("load: %v; want errors.Is %v", err, tc.is)
			}
			if got := h.List()[1].Active; got != "priority@1" {
				t.Errorf("active %s after a refused load, want priority@1", got)
			}
		})
	}
	// A well-formed module passes validation and is refused by its
	// self-test: its hook answers nothing decodable.
	_, err := h.Load(context.Background(), abi.KindScheduling, "x", assemble(nil, baseExports("kiln_abi_v1_0")), true, "test")
	if err == nil || !strings.Contains(err.Error(), "self-test") {
		t.Errorf("load of a module with empty answers: %v; want a self-test failure", err)
	}
}
