package api

import (
	"net/http"
	"testing"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// FuzzDecodeSubmit checks that no body crashes the submit decoder, that every
// refusal is a 4xx naming a type, and that accepted jobs name only safe model
// ids and a known class.
func FuzzDecodeSubmit(f *testing.F) {
	f.Add([]byte(`{"workflow": {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}, "class": "batch"}`))
	f.Add([]byte(`{"workflow": {}}`))
	f.Add([]byte(`{"workflow": null, "class": 3}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("{\"workflow\": {\"\xff\": 1}}"))
	lim := workflow.Limits{}.WithDefaults()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, apiErr := DecodeSubmit(body, lim)
		if apiErr != nil {
			if apiErr.Status < 400 || apiErr.Status > 499 || apiErr.Type == "" || apiErr.Message == "" {
				t.Fatalf("bad refusal %+v", apiErr)
			}
			return
		}
		if req.Class != "interactive" && req.Class != "batch" {
			t.Fatalf("accepted class %q", req.Class)
		}
		for _, m := range req.Models {
			if err := catalog.CleanID(m); err != nil {
				t.Fatalf("accepted unsafe model id %q: %v", m, err)
			}
		}
	})
}

func TestDecodeSubmitErrors(t *testing.T) {
	lim := workflow.Limits{}.WithDefaults()
	for _, tc := range []struct {
		name, body, wantType string
	}{
		{"empty", ``, "invalid_json"},
		{"array", `[1]`, "invalid_json"},
		{"truncated", `{"workflow": {`, "invalid_json"},
		{"trailing", `{"workflow": {}} {}`, "invalid_json"},
		{"bad class", `{"workflow": {"1": {"class_type": "SaveImage", "inputs": {}}}, "class": "vip"}`, "invalid_class"},
		{"class type", `{"workflow": {}, "class": 1}`, "invalid_field"},
		{"negative deadline", `{"workflow": {"1": {"class_type": "SaveImage", "inputs": {}}}, "deadline_ms": -1}`, "invalid_deadline"},
		{"unknown field", `{"workflow": {}, "x": 1}`, "unknown_field"},
		{"missing", `{"class": "batch"}`, "missing_workflow"},
		{"invalid utf8", "{\"workflow\": {\"a\xff\": 1}}", "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeSubmit([]byte(tc.body), lim)
			if err == nil {
				t.Fatal("accepted")
			}
			if err.Type != tc.wantType || err.Status != http.StatusBadRequest {
				t.Fatalf("got %d %s (%s), want 400 %s", err.Status, err.Type, err.Message, tc.wantType)
			}
		})
	}
}
