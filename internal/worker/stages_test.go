package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// stagedHandler runs a RunRequest's stages in order, asking the kernel for
// each one after the first (wire.AwaitStage), and logs what it does.
type stagedHandler struct {
	connHandler
	mu  sync.Mutex
	log []string
}

func (h *stagedHandler) note(s string) {
	h.mu.Lock()
	h.log = append(h.log, s)
	h.mu.Unlock()
}

func (h *stagedHandler) Run(ctx context.Context, req wire.RunRequest, progress func(wire.Progress)) (wire.RunResult, error) {
	for k, st := range req.Stages {
		if err := wire.AwaitStage(ctx, k, st.Nodes[0]); err != nil {
			h.note(fmt.Sprintf("worker: stage %d: %v", k, err))
			return wire.RunResult{}, err
		}
		h.note(fmt.Sprintf("worker: stage %d runs %v", k, st.Nodes))
		progress(wire.Progress{JobID: req.JobID, Node: st.Nodes[0], Value: 1, Max: 1})
	}
	if len(req.Stages) == 0 {
		// No plan: AwaitStage must not wait.
		if err := wire.AwaitStage(ctx, 1, "x"); err != nil {
			return wire.RunResult{}, err
		}
		h.note("worker: unstaged run")
	}
	return wire.RunResult{JobID: req.JobID}, nil
}

func stagedRequest() wire.RunRequest {
	return wire.RunRequest{JobID: "flux", Attempt: 1, Stages: []wire.RunStage{
		{Models: []string{"text_encoders/t5"}, Nodes: []string{"6"}},
		{Models: []string{"diffusion_models/flux"}, Nodes: []string{"13"}},
		{Models: []string{"vae/ae"}, Nodes: []string{"8", "9"}},
	}}
}

// TestRunStaged checks the stage handshake both ways: the kernel's onStage
// runs before the worker enters each later stage, in order; progress
// frames still arrive; and a stage the kernel cannot make room for cancels
// the run with the kernel's error, before the worker runs that stage.
func TestRunStaged(t *testing.T) {
	t.Run("stages in order", func(t *testing.T) {
		h := &stagedHandler{}
		c, _, _ := startWorker(t, h)
		steps := 0
		res, err := c.RunStaged(context.Background(), stagedRequest(), func(p wire.Progress) { steps++ },
			func(k int) error { h.note(fmt.Sprintf("kernel: stage %d loaded", k)); return nil })
		if err != nil || res.JobID != "flux" {
			t.Fatalf("RunStaged = %+v, %v", res, err)
		}
		want := []string{
			"worker: stage 0 runs [6]",
			"kernel: stage 1 loaded", "worker: stage 1 runs [13]",
			"kernel: stage 2 loaded", "worker: stage 2 runs [8 9]",
		}
		if !slices.Equal(h.log, want) {
			t.Fatalf("log %q; want %q", h.log, want)
		}
		if steps != 3 {
			t.Errorf("%d progress frames reached the kernel; want 3 (stage frames are not steps)", steps)
		}
	})
	t.Run("no room for a stage", func(t *testing.T) {
		h := &stagedHandler{}
		c, _, _ := startWorker(t, h)
		noRoom := errors.New("device 0 cannot hold stage 1")
		_, err := c.RunStaged(context.Background(), stagedRequest(), nil, func(k int) error { return noRoom })
		if !errors.Is(err, noRoom) {
			t.Fatalf("RunStaged error %v; want the stage's error", err)
		}
		if slices.Contains(h.log, "worker: stage 1 runs [13]") {
			t.Fatalf("the worker ran a stage the kernel refused: %q", h.log)
		}
	})
	t.Run("no plan", func(t *testing.T) {
		h := &stagedHandler{}
		c, _, _ := startWorker(t, h)
		if _, err := c.Run(context.Background(), wire.RunRequest{JobID: "sd15", Attempt: 1}, nil); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(h.log, []string{"worker: unstaged run"}) {
			t.Fatalf("log %q", h.log)
		}
	})
}
