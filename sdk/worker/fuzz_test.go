package worker

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzReadFrame feeds arbitrary bytes to ReadFrame. It must never panic, and
// a frame that reads must re-encode to a frame that reads back equal.
func FuzzReadFrame(f *testing.F) {
	for _, body := range []any{
		PingRequest{Nonce: 42},
		RunRequest{JobID: "j", Workflow: map[string]any{"1": map[string]any{"class_type": "X", "inputs": map[string]any{"a": []any{"2", 0}}}}},
		nil,
	} {
		var buf bytes.Buffer
		if err := WriteFrame(&buf, Header{ID: 3, Type: TypeRun}, body); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, raw, err := ReadFrame(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			return
		}
		var v any
		_ = DecodeBody(raw, &v) // may fail (unknown ext types), must not panic
		var buf bytes.Buffer
		if err := WriteFrame(&buf, h, raw); err != nil {
			t.Fatalf("re-encode %+v: %v", h, err)
		}
		h2, raw2, err := ReadFrame(bufio.NewReader(&buf))
		if err != nil {
			t.Fatalf("re-read %+v: %v", h, err)
		}
		if h2 != h || !bytes.Equal(raw2, raw) {
			t.Fatalf("round trip: %+v %x → %+v %x", h, raw, h2, raw2)
		}
	})
}
