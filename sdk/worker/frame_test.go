package worker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// roundTrip writes one frame and reads it back.
func roundTrip(t *testing.T, h Header, body any) (Header, msgpack.RawMessage) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteFrame(&buf, h, body); err != nil {
		t.Fatalf("WriteFrame: %v", err)
	}
	gotH, raw, err := ReadFrame(bufio.NewReader(&buf))
	if err != nil {
		t.Fatalf("ReadFrame: %v", err)
	}
	if gotH != h {
		t.Fatalf("header = %+v, want %+v", gotH, h)
	}
	if buf.Len() != 0 {
		t.Fatalf("%d bytes left after the frame", buf.Len())
	}
	return gotH, raw
}

func TestFrameRoundTripMessages(t *testing.T) {
	workflow := map[string]any{
		"3": map[string]any{
			"class_type": "KSampler",
			"inputs": map[string]any{
				"seed":  int64(156680208700286),
				"steps": int64(20),
				"cfg":   8.5,
				"model": []any{"4", int64(0)},
				"extra": map[string]any{"deep": map[string]any{"x": true}},
			},
		},
		"4": map[string]any{"class_type": "CheckpointLoaderSimple", "inputs": map[string]any{"ckpt_name": "sd_xl_base_1.0.safetensors"}},
	}
	for _, tc := range []struct {
		typ  string
		body any
		into func() any // new pointer to decode into
	}{
		{TypeHello, &HelloRequest{Protocol: 1, WorkerID: "gpu0-w1", Device: DeviceInfo{Index: 0, Name: "H100", UUID: "GPU-1", MemoryBytes: 80 << 30, H2DBandwidth: 25e9, ComputeFactor: 1.5, Simulated: true}, OutputDir: "/out", Options: map[string]any{"cost": map[string]any{"sdxl": 1.25}}}, func() any { return new(HelloRequest) }},
		{TypeOK, &HelloReply{Protocol: 1, Name: "sim", Version: "0.1", PID: 42, Capabilities: []string{"cancel", "node:KSampler"}}, func() any { return new(HelloReply) }},
		{TypePing, &PingRequest{Nonce: 1<<64 - 1}, func() any { return new(PingRequest) }},
		{TypeOK, &PingReply{Nonce: 7}, func() any { return new(PingReply) }},
		{TypeLoad, &LoadRequest{Model: "checkpoints/a.safetensors", Path: "/dev/shm/a", Bytes: 6 << 30, Family: "sdxl"}, func() any { return new(LoadRequest) }},
		{TypeOK, &LoadReply{Model: "m", VRAMBytes: 7 << 30, LoadNanos: 123456789, Checksum: "abcd"}, func() any { return new(LoadReply) }},
		{TypeUnload, &UnloadRequest{Model: "m"}, func() any { return new(UnloadRequest) }},
		{TypeOK, &UnloadReply{Model: "m", FreedBytes: 1 << 30}, func() any { return new(UnloadReply) }},
		{TypeRun, &RunRequest{JobID: "j1", Attempt: 2, Workflow: workflow, Models: []string{"checkpoints/a"}}, func() any { return new(RunRequest) }},
		{TypeProgress, &Progress{JobID: "j1", Node: "3", Value: 5, Max: 20}, func() any { return new(Progress) }},
		{TypeResult, &RunResult{JobID: "j1", Outputs: []Output{{Node: "9", Filename: "a.png", Subfolder: "j1", Type: "output", Width: 1024, Height: 1024}}, RunNanos: 5e9}, func() any { return new(RunResult) }},
		{TypeCancel, &CancelRequest{Target: 99}, func() any { return new(CancelRequest) }},
		{TypeOK, &StatsReply{Models: []ModelStat{{Model: "m", VRAMBytes: 1}}, VRAMUsed: 1, JobsDone: 3, RSSBytes: 4, Running: 1}, func() any { return new(StatsReply) }},
		{TypeError, &ErrorReply{Code: ErrCodeCancelled, Message: "stopped"}, func() any { return new(ErrorReply) }},
	} {
		t.Run(tc.typ+"/"+reflect.TypeOf(tc.body).Elem().Name(), func(t *testing.T) {
			_, raw := roundTrip(t, Header{ID: 300, Type: tc.typ}, tc.body)
			got := tc.into()
			if err := DecodeBody(raw, got); err != nil {
				t.Fatalf("DecodeBody: %v", err)
			}
			if !reflect.DeepEqual(got, tc.body) {
				t.Errorf("decoded %#v\nwant    %#v", got, tc.body)
			}
		})
	}
}

func TestFrameEmptyBodies(t *testing.T) {
	for _, tc := range []struct {
		name string
		body any
	}{
		{"nil", nil},
		{"empty map", map[string]any{}},
		{"empty raw", msgpack.RawMessage(nil)},
		{"raw nil", msgpack.RawMessage{0xc0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, raw := roundTrip(t, Header{ID: 1, Type: TypeStats}, tc.body)
			var sr StatsReply
			if err := DecodeBody(raw, &sr); err != nil {
				t.Fatalf("DecodeBody: %v", err)
			}
		})
	}
}

func TestFrameHeaderIDs(t *testing.T) {
	for _, id := range []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1} {
		roundTrip(t, Header{ID: id, Type: TypePing}, PingRequest{Nonce: id})
	}
	roundTrip(t, Header{ID: 1, Type: strings.Repeat("x", 40)}, nil)
	roundTrip(t, Header{ID: 1, Type: strings.Repeat("x", 300)}, nil)
}

// TestDecodeBodyNestedMaps checks that maps decoded into interfaces are
// map[string]any at every depth, as the run request's workflow needs.
func TestDecodeBodyNestedMaps(t *testing.T) {
	// Encoded by hand as Python would: a map inside an array inside a map.
	in := map[string]any{"a": map[string]any{"b": []any{map[string]any{"c": uint64(200)}}}, "n": int64(-3)}
	_, raw := roundTrip(t, Header{ID: 1, Type: TypeRun}, in)
	var got map[string]any
	if err := DecodeBody(raw, &got); err != nil {
		t.Fatal(err)
	}
	a, ok := got["a"].(map[string]any)
	if !ok {
		t.Fatalf("a is %T, want map[string]any", got["a"])
	}
	b, ok := a["b"].([]any)
	if !ok || len(b) != 1 {
		t.Fatalf("b is %T, want []any", a["b"])
	}
	c, ok := b[0].(map[string]any)
	if !ok {
		t.Fatalf("b[0] is %T, want map[string]any", b[0])
	}
	if c["c"] != int64(200) || got["n"] != int64(-3) {
		t.Errorf("numbers: c=%#v n=%#v", c["c"], got["n"])
	}
	var anyv any
	if err := DecodeBody(raw, &anyv); err != nil {
		t.Fatal(err)
	}
	if _, ok := anyv.(map[string]any); !ok {
		t.Errorf("any body is %T, want map[string]any", anyv)
	}
}

// frameBytes builds a frame from a raw payload, with a correct length.
func frameBytes(payload ...[]byte) []byte {
	p := bytes.Join(payload, nil)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...)
}

func mp(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadFrameMalformed(t *testing.T) {
	hdr := mp(t, map[string]any{"id": 1, "type": "ping"})
	body := mp(t, map[string]any{"nonce": 1})
	var good bytes.Buffer
	if err := WriteFrame(&good, Header{ID: 1, Type: TypePing}, PingRequest{Nonce: 1}); err != nil {
		t.Fatal(err)
	}
	deep := bytes.Repeat([]byte{0x81, 0xa1, 'k'}, MaxDepth+2)
	deep = append(deep, 0xc0)
	for _, tc := range []struct {
		name string
		in   []byte
		want error // nil: any error
	}{
		{"empty stream", nil, io.EOF},
		{"truncated length", []byte{0, 0}, io.ErrUnexpectedEOF},
		{"truncated payload", good.Bytes()[:good.Len()-1], io.ErrUnexpectedEOF},
		{"zero length", []byte{0, 0, 0, 0}, ErrFrameSize},
		{"oversize length", []byte{0x01, 0x00, 0x00, 0x01}, ErrFrameSize},
		{"max uint32 length", []byte{0xff, 0xff, 0xff, 0xff}, ErrFrameSize},
		{"garbage", frameBytes([]byte{0xc1, 0xc1, 0xc1}), ErrMalformedFrame},
		{"header not a map", frameBytes(mp(t, []int{1, 2}), body), ErrMalformedFrame},
		{"missing body", frameBytes(hdr), ErrMalformedFrame},
		{"body not a map", frameBytes(hdr, mp(t, 5)), ErrMalformedFrame},
		{"trailing bytes", frameBytes(hdr, body, []byte{0x01}), ErrMalformedFrame},
		{"truncated body", frameBytes(hdr, body[:len(body)-1]), ErrMalformedFrame},
		{"missing id", frameBytes(mp(t, map[string]any{"type": "ping"}), body), ErrMalformedFrame},
		{"missing type", frameBytes(mp(t, map[string]any{"id": 1}), body), ErrMalformedFrame},
		{"empty type", frameBytes(mp(t, map[string]any{"id": 1, "type": ""}), body), ErrMalformedFrame},
		{"id is a string", frameBytes(mp(t, map[string]any{"id": "1", "type": "ping"}), body), ErrMalformedFrame},
		{"negative id", frameBytes(mp(t, map[string]any{"id": -1, "type": "ping"}), body), ErrMalformedFrame},
		{"type is an int", frameBytes(mp(t, map[string]any{"id": 1, "type": 3}), body), ErrMalformedFrame},
		{"huge array claim", frameBytes(hdr, []byte{0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff}), ErrMalformedFrame},
		{"too deep", frameBytes(hdr, deep), ErrMalformedFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(tc.in)))
			if err == nil {
				t.Fatal("ReadFrame succeeded, want an error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("ReadFrame error = %v, want %v", err, tc.want)
			}
			if tc.want == io.EOF && err != io.EOF {
				t.Errorf("clean end = %#v, want io.EOF itself", err)
			}
		})
	}
}

func TestReadFrameAcceptsPeerVariants(t *testing.T) {
	// Signed id, extra header key, key order reversed, nil body.
	hdr := []byte{0x83, 0xa4, 't', 'y', 'p', 'e', 0xa2, 'o', 'k', 0xa1, 'x', 0x90, 0xa2, 'i', 'd', 0xd2, 0, 0, 1, 0}
	h, raw, err := ReadFrame(bufio.NewReader(bytes.NewReader(frameBytes(hdr, []byte{0xc0}))))
	if err != nil {
		t.Fatal(err)
	}
	if h != (Header{ID: 256, Type: TypeOK}) || !bytes.Equal(raw, []byte{0xc0}) {
		t.Errorf("got %+v %x", h, raw)
	}
}

func TestWriteFrameRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Header
		body any
		want error
	}{
		{"empty type", Header{ID: 1}, nil, ErrMalformedFrame},
		{"body not a map", Header{ID: 1, Type: TypeOK}, 5, ErrMalformedFrame},
		{"oversize", Header{ID: 1, Type: TypeOK}, map[string]string{"x": strings.Repeat("y", MaxFrameBytes)}, ErrFrameSize},
		{"unencodable", Header{ID: 1, Type: TypeOK}, map[string]any{"f": func() {}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteFrame(&buf, tc.h, tc.body)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("WriteFrame = %v, want %v", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("%d bytes written on error", buf.Len())
			}
		})
	}
}

// oneWrite counts Write calls.
type oneWrite struct {
	bytes.Buffer
	calls int
}

func (w *oneWrite) Write(p []byte) (int, error) { w.calls++; return w.Buffer.Write(p) }

func TestWriteFrameSingleWrite(t *testing.T) {
	w := &oneWrite{}
	if err := WriteFrame(w, Header{ID: 5, Type: TypeRun}, RunRequest{JobID: "j", Workflow: map[string]any{"a": strings.Repeat("b", 100000)}}); err != nil {
		t.Fatal(err)
	}
	if w.calls != 1 {
		t.Errorf("WriteFrame made %d Write calls, want 1", w.calls)
	}
}

// TestProtocolDocFrames checks the hex dumps in PROTOCOL.md byte for byte.
func TestProtocolDocFrames(t *testing.T) {
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		marker string
		h      Header
		body   any
	}{
		{"<!-- frame: ping id=1 nonce=42 -->", Header{ID: 1, Type: TypePing}, PingRequest{Nonce: 42}},
		{"<!-- frame: ok id=1 nonce=42 -->", Header{ID: 1, Type: TypeOK}, PingReply{Nonce: 42}},
	} {
		t.Run(tc.marker, func(t *testing.T) {
			_, after, ok := strings.Cut(string(doc), tc.marker+"\n```\n")
			if !ok {
				t.Fatalf("marker %q followed by a code block not found", tc.marker)
			}
			dump, _, _ := strings.Cut(after, "```")
			var buf bytes.Buffer
			if err := WriteFrame(&buf, tc.h, tc.body); err != nil {
				t.Fatal(err)
			}
			if want := hex.Dump(buf.Bytes()); dump != want {
				t.Errorf("PROTOCOL.md shows\n%s\nWriteFrame writes\n%s", dump, want)
			}
		})
	}
}

func BenchmarkWriteReadPing(b *testing.B) {
	var buf bytes.Buffer
	r := bufio.NewReader(&buf)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := WriteFrame(&buf, Header{ID: uint64(i), Type: TypePing}, PingRequest{Nonce: uint64(i)}); err != nil {
			b.Fatal(err)
		}
		_, raw, err := ReadFrame(r)
		if err != nil {
			b.Fatal(err)
		}
		var p PingRequest
		if err := DecodeBody(raw, &p); err != nil {
			b.Fatal(err)
		}
	}
}
