package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The test in this file checks ComfyUI's binary preview frames over a real
// WebSocket: the sim worker sends a PNG preview with every sampler step, and
// kiln forwards it to the prompt's client as a type 1 frame
// ([u32 1][u32 format][image], big-endian, format 2 = PNG), or as a type 4
// frame ([u32 4][u32 len][metadata JSON][image]) to a client that sent
// feature_flags with supports_preview_metadata, and no other binary type.

// rawFrame is one WebSocket frame as received.
type rawFrame struct {
	binary bool
	data   []byte
}

// rawWS is a ComfyUI client that keeps binary frames.
type rawWS struct {
	conn   *websocket.Conn
	frames chan rawFrame
}

func dialRawWS(t *testing.T, k *kilnProc, clientID string) *rawWS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(k.base, "http", "ws", 1)+"/ws?clientId="+clientID, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(4 << 20)
	c := &rawWS{conn: conn, frames: make(chan rawFrame, 4096)}
	go func() {
		defer close(c.frames)
		for {
			typ, data, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			c.frames <- rawFrame{binary: typ == websocket.MessageBinary, data: data}
		}
	}()
	t.Cleanup(func() { conn.CloseNow() })
	return c
}

// next returns the next frame, failing the test after a deadline.
func (c *rawWS) next(t *testing.T) rawFrame {
	t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			t.Fatal("socket closed")
		}
		return f
	case <-time.After(60 * time.Second):
		t.Fatal("timed out waiting for a frame")
	}
	return rawFrame{}
}

// text decodes a text frame; ok is false for a binary one.
func (f rawFrame) text() (typ string, data map[string]any, ok bool) {
	if f.binary {
		return "", nil, false
	}
	var m struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	_ = json.Unmarshal(f.data, &m)
	return m.Type, m.Data, true
}

// preview is a parsed binary preview frame.
type preview struct {
	typ    uint32
	format uint32         // type 1
	meta   map[string]any // type 4
	image  []byte
}

func parsePreview(t *testing.T, b []byte) preview {
	t.Helper()
	if len(b) < 8 {
		t.Fatalf("binary frame of %d bytes", len(b))
	}
	p := preview{typ: binary.BigEndian.Uint32(b)}
	switch p.typ {
	case 1:
		p.format, p.image = binary.BigEndian.Uint32(b[4:]), b[8:]
	case 4:
		n := binary.BigEndian.Uint32(b[4:])
		if uint64(n) > uint64(len(b)-8) {
			t.Fatalf("type 4 frame: metadata length %d in a frame of %d bytes", n, len(b))
		}
		if err := json.Unmarshal(b[8:8+n], &p.meta); err != nil {
			t.Fatalf("type 4 frame: metadata %q: %v", b[8:8+n], err)
		}
		p.image = b[8+n:]
	default:
		t.Fatalf("binary frame of type %d; kiln sends types 1 and 4 only", p.typ)
	}
	return p
}

func TestComfyPreviewFrames(t *testing.T) {
	k := startComfyKiln(t)
	top := t // sockets live across subtests
	const steps = 3
	clients := map[string]*rawWS{}
	for i, tc := range []struct {
		name     string
		clientID string
		metadata bool   // sends feature_flags with supports_preview_metadata
		method   string // extra_data.preview_method; kiln's default is none
		wantType uint32 // of every binary frame; 0: none at all
	}{
		// Previews are off by default (ComfyUI's --preview-method none):
		// a client that keeps every binary frame gets none.
		{name: "none by default", clientID: "legacy", wantType: 0},
		{name: "none asked", clientID: "meta", metadata: true, method: "none", wantType: 0},
		// Prompts run one after the other and both sockets stay open:
		// a preview sent to the wrong client shows up in that client's
		// next window and fails its count or its prompt id.
		// A prompt opts in with extra_data.preview_method, as ComfyUI's
		// frontend does.
		{name: "type 1", clientID: "legacy", method: "auto", wantType: 1},
		{name: "type 4 with supports_preview_metadata", clientID: "meta", metadata: true, method: "taesd", wantType: 4},
		{name: "type 1 again", clientID: "legacy", method: "latent2rgb", wantType: 1},
		{name: "default again", clientID: "legacy", method: "default", wantType: 0},
	} {
		seed := 1000 + i // distinct seeds: a cache hit sends no progress
		t.Run(tc.name, func(t *testing.T) {
			ws := clients[tc.clientID]
			if ws == nil {
				ws = dialRawWS(top, k, tc.clientID)
				clients[tc.clientID] = ws
				if typ, d, _ := ws.next(t).text(); typ != "status" || d["sid"] != tc.clientID {
					t.Fatalf("first frame %s %v, want status with sid %q", typ, d, tc.clientID)
				}
				if tc.metadata {
					flags := `{"type":"feature_flags","data":{"supports_preview_metadata":true}}`
					if err := ws.conn.Write(context.Background(), websocket.MessageText, []byte(flags)); err != nil {
						t.Fatal(err)
					}
					// The server answers with its own flags, as ComfyUI
					// does; from then on this socket gets type 4.
					for {
						if typ, d, ok := ws.next(t).text(); ok && typ == "feature_flags" {
							if d["supports_preview_metadata"] != true {
								t.Errorf("server feature_flags %v", d)
							}
							break
						}
					}
				}
			}
			req := map[string]any{"prompt": loadWorkflow(t, txt2img, steps, seed), "client_id": tc.clientID}
			if tc.method != "" {
				req["extra_data"] = map[string]any{"preview_method": tc.method}
			}
			code, ans := k.postJSON("/prompt", req)
			if code != 200 {
				t.Fatalf("/prompt: %d %v", code, ans)
			}
			id := ans["prompt_id"].(string)

			// Read up to the prompt's closing executing {node: null}.
			var previews []preview
			var progress []map[string]any
			lastText := ""
			for done := false; !done; {
				f := ws.next(t)
				if f.binary {
					// ComfyUI's progress hook: progress_state, the type 4
					// frame, progress, the type 1 frame.
					if want := map[uint32]string{1: "progress", 4: "progress_state"}[tc.wantType]; lastText != want {
						t.Errorf("binary frame after %q; ComfyUI sends a type %d preview right after %s", lastText, tc.wantType, want)
					}
					previews = append(previews, parsePreview(t, f.data))
					continue
				}
				typ, d, _ := f.text()
				lastText = typ
				switch {
				case d["prompt_id"] != id:
				case typ == "progress":
					progress = append(progress, d)
				case typ == "execution_error":
					t.Fatalf("execution_error: %v", d)
				case typ == "executing" && d["node"] == nil:
					done = true
				}
			}
			if tc.wantType == 0 {
				if len(progress) != steps || len(previews) != 0 {
					t.Fatalf("%d progress messages and %d previews; want %d and none", len(progress), len(previews), steps)
				}
				return
			}
			if len(progress) != steps || len(previews) != len(progress) {
				t.Fatalf("%d progress messages and %d previews; want %d of each", len(progress), len(previews), steps)
			}
			for i, p := range previews {
				if p.typ != tc.wantType {
					t.Errorf("preview %d: type %d, want %d", i, p.typ, tc.wantType)
				}
				switch p.typ {
				case 1:
					if p.format != 2 {
						t.Errorf("preview %d: format %d, want 2 (PNG)", i, p.format)
					}
				case 4:
					node := progress[i]["node"]
					for key, want := range map[string]any{"prompt_id": id, "node_id": node, "display_node_id": node,
						"real_node_id": node, "parent_node_id": nil, "image_type": "image/png"} {
						if got, ok := p.meta[key]; !ok || got != want {
							t.Errorf("preview %d: metadata %s = %v, want %v (metadata %v)", i, key, got, want, p.meta)
						}
					}
				}
				img, err := png.Decode(bytes.NewReader(p.image))
				if err != nil {
					t.Fatalf("preview %d: not a PNG: %v", i, err)
				}
				if b := img.Bounds(); b.Dx() != 64 || b.Dy() != 64 {
					t.Errorf("preview %d: %v, want 64×64", i, b)
				}
			}
			if bytes.Equal(previews[0].image, previews[len(previews)-1].image) {
				t.Error("the first and last previews are the same image; they should show the steps")
			}
		})
	}
}
