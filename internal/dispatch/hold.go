package dispatch

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/worker"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// Ledger keys of the reservations that are not models: a worker's context
// and a running stage's activations. They are held, never evicted.
const (
	contextKey     = "(worker context)"
	activationsKey = "(activations %s)"
)

// DefaultWorkerContextBytes is the dispatch.worker_context_bytes of a
// dispatcher built without one: what a CUDA context with PyTorch's
// allocator and cuBLAS workspace holds before any model (≈ 500 MiB).
const DefaultWorkerContextBytes = 512 << 20

// jobHold is what one running job holds on its worker's device: pins on
// the models of its current stage (and of earlier stages that later ones
// still need) and a reservation for the stage's activations. A job moves
// from stage to stage through enter and release; done lets go of all.
type jobHold struct {
	d     *Dispatcher
	w     *worker.Worker
	jobID string
	plan  Plan
	// inherited lets go of the pins a batch's lead left for this job (its
	// warm models), nil when there are none: a job that must wait for
	// room lets go of them too (admit.go).
	inherited func()

	pinned []string
	// kept are the models of its finished stages it keeps (enter).
	kept []*residentModel
	// keepAll: the job's models fit its device together, and its
	// finished stages' models stay pinned while its stages find room.
	keepAll bool
	act     *device.Reservation
}

// enter makes models resident and pinned and holds act bytes for the
// stage's activations (in place of the previous stage's), all or nothing
// and in turn with the device's other jobs (admit.go): while the room is
// not there, the job waits holding at most the models its earlier stages
// keep for this one, and nothing at all unless it is the device's oldest
// waiter. laterStage is set for a running job's stage after its first,
// which may pass the device's waiters when it fits.
//
// done are models of finished stages that no later stage needs
// (Plan.Step). They are unpinned but kept (residentModel.kept): a
// reservation evicts them only when nothing else makes the room
// (Dispatcher.reserve). Unpinned like any other, they were what the
// device's other worker evicted first, and the next job loaded them again
// although the whole job fitted (on 48 GiB the staged node made 2.9× the
// cold loads of one admitting whole jobs); pinned until the job's end,
// they would hold the other worker back where the device is small.
//
// A job whose models all fit its device together (Plan.Whole; keepAll)
// keeps them pinned until its end, as a node admitting whole jobs does,
// unless a stage finds no room: it then keeps them as above before it
// tries again, so that a job never waits pinning what its stage does not
// need.
func (h *jobHold) enter(ctx context.Context, models, done []string, act uint64, laterStage bool) error {
	h.releaseActivations()
	done = slices.DeleteFunc(slices.Clone(done), func(m string) bool { return slices.Contains(models, m) })
	if !h.keepAll {
		h.keep(done)
		done = nil
	}
	// Pins on models the stage does not need would be held while it
	// waits; a model's uses are contiguous, so a kept model is always
	// the next stage's and this lets go of nothing in practice.
	h.release(slices.DeleteFunc(slices.Clone(h.pinned), func(m string) bool {
		return slices.Contains(models, m) || slices.Contains(done, m)
	}))
	g := h.d.gate(h.w.Device().Index)
	queued := false
	var since time.Time
	defer func() {
		if queued {
			g.leave(h.jobID)
			// The next waiter may be the head now.
			h.d.signalUnpin()
		}
	}()
	return h.d.waitVRAM(ctx, func() (<-chan struct{}, error) {
		var need []string
		for _, m := range models {
			if !slices.Contains(h.pinned, m) {
				need = append(need, m)
			}
		}
		t, wait, err := h.d.tryStage(ctx, h.w, h.jobID, need, h.plan, act, laterStage || queued)
		if err == nil {
			h.pinned = append(h.pinned, t.pinned...)
			h.act = t.act
			if queued {
				h.d.log.Debug().Str("job", h.jobID).Str("worker", h.w.ID()).Dur("waited", h.d.clk.Since(since)).Msg("room for the stage")
			}
			return nil, nil
		}
		if wait == nil {
			return nil, err
		}
		if len(done) > 0 {
			// No room beside the finished stages' models: keep them
			// unpinned (evicted last) and try again before waiting.
			h.keep(done)
			done = nil
			return closedChan, err
		}
		head := g.join(h.jobID)
		if !queued {
			since = h.d.clk.Now()
			h.d.log.Debug().Str("job", h.jobID).Str("worker", h.w.ID()).Bool("head", head).Bool("later_stage", laterStage).
				Err(err).Msg("waiting for room on the device")
		}
		queued = true
		let := h.inherited != nil
		if let {
			h.inherited()
			h.inherited = nil
		}
		if !head && len(h.pinned) > 0 {
			h.release(slices.Clone(h.pinned))
			let = true
		}
		if let {
			// What it let go may be the room it waits for.
			return closedChan, err
		}
		return wait, err
	})
}

// closedChan is a wait that is over at once.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// release unpins models that no later stage needs: they stay resident
// (warm for the next job) but the eviction policy may now unload them
// when a stage needs the room.
func (h *jobHold) release(models []string) {
	if len(models) == 0 {
		return
	}
	var rel []string
	h.pinned = slices.DeleteFunc(h.pinned, func(m string) bool {
		if slices.Contains(models, m) {
			rel = append(rel, m)
			return true
		}
		return false
	})
	h.d.unpin(h.w.ID(), rel)
}

// keep unpins models of finished stages that this job pins, marking them
// kept (evicted last) until the job is done.
func (h *jobHold) keep(models []string) {
	var moved []string
	h.pinned = slices.DeleteFunc(h.pinned, func(m string) bool {
		if slices.Contains(models, m) {
			moved = append(moved, m)
			return true
		}
		return false
	})
	if len(moved) == 0 {
		return
	}
	h.d.mu.Lock()
	for _, m := range moved {
		if rm := h.d.resident[h.w.ID()][m]; rm != nil && rm.pins > 0 {
			rm.pins--
			rm.kept++
			h.kept = append(h.kept, rm)
		}
	}
	h.d.mu.Unlock()
	h.d.signalUnpin()
}

// releaseActivations gives the stage's activations back.
func (h *jobHold) releaseActivations() {
	if h.act != nil {
		h.d.opts.Devices.Ledger(h.w.Device().Index).Release(h.act)
		h.act = nil
		h.d.signalUnpin()
	}
}

// done unpins everything, stops keeping what it kept, and gives the
// activations back.
func (h *jobHold) done() {
	h.releaseActivations()
	h.d.unpin(h.w.ID(), h.pinned)
	h.pinned = nil
	if len(h.kept) > 0 {
		h.d.mu.Lock()
		for _, rm := range h.kept {
			rm.kept-- // an evicted one is gone from d.resident: no harm
		}
		h.d.mu.Unlock()
		h.kept = nil
	}
}

// wireStages is the plan as the run request carries it.
func wireStages(p Plan) []wire.RunStage {
	out := make([]wire.RunStage, len(p.Stages))
	for i, s := range p.Stages {
		out[i] = wire.RunStage{Models: s.Models, Nodes: s.Nodes}
	}
	return out
}

// ensureContext holds the worker's context bytes on its device's ledger,
// once per worker process (OnWorkerExit gives them back).
func (d *Dispatcher) ensureContext(ctx context.Context, w *worker.Worker) error {
	bytes := d.opts.WorkerContextBytes
	if bytes == 0 {
		return nil
	}
	d.mu.Lock()
	_, ok := d.contexts[w.ID()]
	d.mu.Unlock()
	if ok {
		return nil
	}
	res, err := d.reserveWait(ctx, w, contextKey, bytes)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.contexts[w.ID()] = res
	d.mu.Unlock()
	return nil
}

// reserveWait reserves bytes under key on the worker's device (evicting
// through the decision core), waiting for running jobs to let go of VRAM
// up to Options.VRAMWait.
func (d *Dispatcher) reserveWait(ctx context.Context, w *worker.Worker, key string, bytes uint64) (*device.Reservation, error) {
	var res *device.Reservation
	err := d.waitVRAM(ctx, func() (<-chan struct{}, error) {
		var wait <-chan struct{}
		var err error
		res, wait, err = d.reserve(ctx, w, key, bytes)
		return wait, err
	})
	return res, err
}

// waitVRAM calls try until it succeeds, fails for good (a nil wait
// channel) or Options.VRAMWait passes; between tries it waits for an unpin
// (wait) or a retry tick.
func (d *Dispatcher) waitVRAM(ctx context.Context, try func() (wait <-chan struct{}, err error)) error {
	limit := d.opts.VRAMWait
	if limit <= 0 {
		limit = DefaultVRAMWait
	}
	deadline := d.clk.Now().Add(limit)
	for {
		wait, err := try()
		if err == nil {
			return nil
		}
		if wait == nil {
			return err
		}
		// Other jobs on this device hold the memory we need: wait until one
		// of them lets go, then try again. The wait has a deadline and a
		// heartbeat: a retry each vramRetry even without an unpin, and the
		// attempt given back to the queue at the deadline (ErrVRAMWait),
		// where another worker may take it.
		if !d.clk.Now().Before(deadline) {
			return fmt.Errorf("%w after %s: %w", ErrVRAMWait, limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait:
		case <-d.clk.After(min(vramRetry, max(deadline.Sub(d.clk.Now()), 0))):
		}
	}
}

// HeldBytes sums a device's reservations that are not models (contexts,
// activations): memory no eviction can free, which a reservation waits
// for like pinned models.
func HeldBytes(led *device.Ledger) uint64 {
	var b uint64
	for _, r := range led.Snapshot() {
		if len(r.Key) > 0 && r.Key[0] == '(' {
			b += r.Bytes
		}
	}
	return b
}

// LoadWaves orders a job's loads by the loaders' component metadata: entry
// i waits for the entries whose component satisfies one of its DependsOn
// (a LoRA or a ControlNet after the checkpoint or diffusion model it
// patches); entries with nothing to wait for load together. It returns the
// waves in order, each a list of indices into entries. A dependency that
// no entry of the job satisfies is no wait (a LoRA loaded alone patches
// nothing yet). A cycle in the metadata (which no real loader declares)
// puts the rest in one last wave rather than never loading them.
func LoadWaves(entries []catalog.Entry) [][]int {
	deps := make([][]int, len(entries))
	for i, e := range entries {
		for _, want := range dependsOn(e) {
			for j, f := range entries {
				if j != i && satisfies(component(f), want) {
					deps[i] = append(deps[i], j)
				}
			}
		}
	}
	done := make([]bool, len(entries))
	var waves [][]int
	for left := len(entries); left > 0; {
		var wave []int
		for i := range entries {
			if !done[i] && !slices.ContainsFunc(deps[i], func(j int) bool { return !done[j] }) {
				wave = append(wave, i)
			}
		}
		if len(wave) == 0 {
			for i := range entries {
				if !done[i] {
					wave = append(wave, i)
				}
			}
		}
		for _, i := range wave {
			done[i] = true
		}
		left -= len(wave)
		waves = append(waves, wave)
	}
	return waves
}

// component is the entry's kind as its loader reported it, or as its
// folder says for a catalog without loaders.
func component(e catalog.Entry) string {
	if e.Component != "" {
		return e.Component
	}
	return sdk.ComponentOf(e.ID)
}

// dependsOn is the entry's DependsOn, or for a catalog without loaders
// what its loader would have said of its component.
func dependsOn(e catalog.Entry) []string {
	if len(e.DependsOn) > 0 || e.Backend != "" {
		return e.DependsOn
	}
	if sdk.DependsOnBase(component(e)) {
		return []string{"checkpoint"}
	}
	return nil
}

// satisfies reports whether a component of kind have is what a
// dependency on want waits for. "checkpoint" is the loaders' name for the
// base model a patch applies to, which a diffusion model (component unet)
// is as much as a checkpoint.
func satisfies(have, want string) bool {
	if have == want {
		return true
	}
	return want == "checkpoint" && have == "unet"
}
