package worker

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
)

// graphHandler reports the graph its run received: one output per node,
// named by the node's class and the Go type of its "steps" input.
type graphHandler struct{ testHandler }

func (h *graphHandler) Run(_ context.Context, req RunRequest, _ func(Progress)) (RunResult, error) {
	var res RunResult
	ids := make([]string, 0, len(req.Workflow))
	for id := range req.Workflow {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		n, _ := req.Workflow[id].(map[string]any)
		in, _ := n["inputs"].(map[string]any)
		res.Outputs = append(res.Outputs, Output{Node: id, Filename: fmt.Sprintf("%v %T", n["class_type"], in["steps"])})
	}
	return res, nil
}

// TestServeWorkflowJSON: Serve lists CapabilityWorkflowJSON for a handler
// that does not, and hands the handler a graph sent as JSON bytes (1.3) in
// the form a msgpack map of a 1.2 kernel had: numbers as float64.
func TestServeWorkflowJSON(t *testing.T) {
	a, b := socketpair(t)
	errc := make(chan error, 1)
	go func() { errc <- Serve(context.Background(), b, &graphHandler{}) }()
	c := &client{t: t, conn: a, r: bufio.NewReader(a)}
	c.send(1, TypeHello, HelloRequest{Protocol: ProtocolVersion, ProtocolMinor: ProtocolMinor, WorkerID: "w"})
	_, raw := c.recv()
	var hr HelloReply
	c.decode(raw, &hr)
	if !slices.Contains(hr.Capabilities, CapabilityWorkflowJSON) || !slices.Contains(hr.Capabilities, "cancel") {
		t.Fatalf("hello capabilities %v; want the handler's and %q", hr.Capabilities, CapabilityWorkflowJSON)
	}
	graph := `{"3": {"class_type": "KSampler", "inputs": {"steps": 4}}, "9": {"class_type": "SaveImage", "inputs": {}}}`
	for _, tc := range []struct {
		name     string
		req      RunRequest
		wantType string
		want     []string
	}{
		{name: "json bytes", req: RunRequest{JobID: "a", WorkflowJSON: []byte(graph)}, wantType: TypeResult,
			want: []string{"KSampler float64", "SaveImage <nil>"}},
		{name: "map (1.2 kernel)", req: RunRequest{JobID: "b", Workflow: map[string]any{
			"3": map[string]any{"class_type": "KSampler", "inputs": map[string]any{"steps": 4.0}}}},
			wantType: TypeResult, want: []string{"KSampler float64"}},
		{name: "not json", req: RunRequest{JobID: "c", WorkflowJSON: []byte(`{"3": `)}, wantType: TypeError},
		{name: "not an object", req: RunRequest{JobID: "d", WorkflowJSON: []byte(`[1, 2]`)}, wantType: TypeError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.send(10, TypeRun, tc.req)
			hdr, raw := c.recv()
			if hdr.Type != tc.wantType {
				t.Fatalf("reply %+v; want %s", hdr, tc.wantType)
			}
			if tc.wantType == TypeError {
				var er ErrorReply
				c.decode(raw, &er)
				if er.Code != ErrCodeBadRequest {
					t.Errorf("error %+v; want %s", er, ErrCodeBadRequest)
				}
				return
			}
			var res RunResult
			c.decode(raw, &res)
			var got []string
			for _, o := range res.Outputs {
				got = append(got, o.Filename)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("handler saw %q; want %q", got, tc.want)
			}
		})
	}
	c.conn.Close()
	if err := waitServe(t, errc); err != nil {
		t.Errorf("Serve after peer close = %v, want nil", err)
	}
}
