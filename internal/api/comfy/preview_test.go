package comfy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/kiln-gpu/kiln/internal/job"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

func TestPreviewFrames(t *testing.T) {
	img := []byte("\x89PNG fake image bytes")
	for _, tc := range []struct {
		format     string
		wantFormat uint32
		wantMIME   string
	}{
		{format: wire.PreviewPNG, wantFormat: previewPNG, wantMIME: "image/png"},
		{format: wire.PreviewJPEG, wantFormat: previewJPEG, wantMIME: "image/jpeg"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			e := job.Event{Type: job.EventProgress, JobID: "p1", Node: "3", Value: 1, Max: 2, Preview: img, PreviewFormat: tc.format}

			b := previewFrame(e.PreviewFormat, e.Preview)
			if typ, f := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]); typ != 1 || f != tc.wantFormat || !bytes.Equal(b[8:], img) {
				t.Errorf("type 1 frame: type %d format %d image %q; want 1 %d %q", typ, f, b[8:], tc.wantFormat, img)
			}

			b = previewWithMetadataFrame(e.JobID, e.Node, e.PreviewFormat, e.Preview)
			if typ := binary.BigEndian.Uint32(b); typ != 4 {
				t.Fatalf("type 4 frame: type %d", typ)
			}
			n := binary.BigEndian.Uint32(b[4:])
			var meta map[string]any
			if err := json.Unmarshal(b[8:8+n], &meta); err != nil {
				t.Fatalf("type 4 metadata: %v", err)
			}
			want := map[string]any{"node_id": "3", "display_node_id": "3", "real_node_id": "3", "parent_node_id": nil,
				"prompt_id": "p1", "image_type": tc.wantMIME}
			for k, v := range want {
				if got, ok := meta[k]; !ok || got != v {
					t.Errorf("metadata %s = %v, want %v", k, got, v)
				}
			}
			if !bytes.Equal(b[8+n:], img) {
				t.Errorf("type 4 image %q, want %q", b[8+n:], img)
			}
		})
	}
}
