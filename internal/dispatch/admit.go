package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/worker"
)

// Entering a stage without deadlock (docs/stages.md, "Waiting for a
// stage").
//
// Jobs are admitted by their largest stage, so two jobs on the workers of
// one device may each hold part of it and each need, for its next stage,
// room that the other holds: a model a later stage still needs stays
// pinned across a boundary, and a stage's activations used to be reserved
// after its models were pinned. Waiting while holding is the classic
// deadlock (hold and wait between two workers of one device), and it hung
// `make run` until dispatch.vram_wait. Three rules make it impossible:
//
//  1. A stage is entered all or nothing: under its device's gate a try
//     pins the models the worker holds and reserves the rest and the
//     activations, or it undoes everything it did and holds nothing new.
//     Before it evicts anything it checks that the room can be made at
//     all, so that a try that must wait costs no other job its warm
//     models.
//  2. Jobs that must wait queue on the device, oldest first. Only the head
//     of the queue waits while holding (the models its earlier stages
//     keep for this one, never more than this stage, which fits the device
//     alone); every other waiter lets go of all it holds, so nothing it
//     holds stands in the head's way.
//  3. A job that starts on the device (its first stage) queues behind
//     waiters; a running job's later stage may pass them when it fits
//     (it ends in finitely many stages, and holding it back would only
//     stall two workers), and queues when it does not.
//
// Then the head's stage fits once the stages that run now have ended: the
// others wait holding nothing or are running, and running stages end. A
// wait still has its deadline (dispatch.vram_wait) for what no rule here
// controls (a worker that never ends its run).

// deviceGate serialises the stage entries of one device's jobs and keeps
// the jobs that wait for room on it in order.
type deviceGate struct {
	mu sync.Mutex
	// waiting are the jobs waiting for room on the device, oldest first.
	waiting []string
}

// gate returns device dev's gate.
func (d *Dispatcher) gate(dev int) *deviceGate {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := d.gates[dev]
	if g == nil {
		g = &deviceGate{}
		d.gates[dev] = g
	}
	return g
}

// mayTry reports whether job may try to enter a stage now: it is the
// oldest waiter, or none waits, or it is a running job's later stage
// (mayPass) that has not had to wait yet. Callers hold g.mu.
func (g *deviceGate) mayTry(job string, mayPass bool) bool {
	if i := slices.Index(g.waiting, job); i >= 0 {
		return i == 0
	}
	return mayPass || len(g.waiting) == 0
}

// join queues job on the gate; it reports whether job is the head.
func (g *deviceGate) join(job string) (head bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Contains(g.waiting, job) {
		g.waiting = append(g.waiting, job)
	}
	return g.waiting[0] == job
}

// leave takes job off the gate's queue.
func (g *deviceGate) leave(job string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiting = slices.DeleteFunc(g.waiting, func(id string) bool { return id == job })
}

// Waiting returns the jobs waiting for room on device dev, oldest first:
// what a test or an operator looks at when a job stays "loading".
func (d *Dispatcher) Waiting(dev int) []string {
	g := d.gate(dev)
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.waiting)
}

// pendingLoad is a model a try reserved and the worker has to load.
type pendingLoad struct {
	rm    *residentModel
	entry catalog.Entry
}

// stageTry is what one successful try holds: the models it pinned and
// the stage's activations.
type stageTry struct {
	pinned []string
	act    *device.Reservation
}

// tryStage makes one all-or-nothing attempt to enter a stage of jobID on
// w: models (those of the stage the job does not hold already) resident
// and pinned, and act bytes of activations reserved. Independent models
// load in parallel (LoadWaves), after the gate is let go. On any error
// the try holds nothing; with an error wrapping ErrVRAMHeld it returns a
// channel closed at the next unpin, and the caller waits.
func (d *Dispatcher) tryStage(ctx context.Context, w *worker.Worker, jobID string, models []string, plan Plan, act uint64, mayPass bool) (stageTry, <-chan struct{}, error) {
	dev := w.Device().Index
	g := d.gate(dev)
	// Taken before trying, so that an unpin between a failed try and the
	// wait is not missed.
	d.mu.Lock()
	wait := d.unpinned
	d.mu.Unlock()
	g.mu.Lock()
	if !g.mayTry(jobID, mayPass) {
		n := len(g.waiting)
		g.mu.Unlock()
		return stageTry{}, wait, fmt.Errorf("device %d: behind %d jobs waiting for room: %w", dev, n, ErrVRAMHeld)
	}
	t, loads, awaits, err := d.reserveStage(ctx, w, jobID, models, plan, act)
	g.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrVRAMHeld) {
			return stageTry{}, wait, err
		}
		return stageTry{}, nil, err
	}
	if err := d.loadStage(ctx, w, plan, loads, awaits); err != nil {
		d.unpin(w.ID(), t.pinned)
		if t.act != nil {
			d.opts.Devices.Ledger(dev).Release(t.act)
		}
		return stageTry{}, nil, err
	}
	return t, nil, nil
}

// reserveStage is tryStage's part under the device's gate: it pins the
// models w holds, checks that the rest and the activations can be made
// room for, and reserves them, evicting unpinned models through the
// decision core. It undoes everything on failure.
func (d *Dispatcher) reserveStage(ctx context.Context, w *worker.Worker, jobID string, models []string, plan Plan, act uint64) (t stageTry, loads []pendingLoad, awaits []*residentModel, err error) {
	dev := w.Device().Index
	led := d.opts.Devices.Ledger(dev)
	entries := make([]catalog.Entry, len(models))
	for i, m := range models {
		e, lerr := d.opts.Catalog.Lookup(m)
		if lerr != nil {
			return t, nil, nil, fmt.Errorf("model %s: %w", m, lerr)
		}
		entries[i] = e
	}
	undo := func() {
		for _, p := range loads {
			d.abandon(w, p.rm, err)
		}
		var warm []string
		for _, m := range t.pinned {
			if !slices.ContainsFunc(loads, func(p pendingLoad) bool { return p.rm.model == m }) {
				warm = append(warm, m)
			}
		}
		d.unpin(w.ID(), warm)
		if t.act != nil {
			led.Release(t.act)
		}
		t, loads, awaits = stageTry{}, nil, nil
	}
	// Pin what the worker holds; the rest is what the stage needs room for.
	var missing []int
	need := act
	d.mu.Lock()
	byModel := d.resident[w.ID()]
	if byModel == nil {
		byModel = map[string]*residentModel{}
		d.resident[w.ID()] = byModel
	}
	for i, m := range models {
		if rm := byModel[m]; rm != nil {
			rm.pins++
			rm.hits++
			rm.lastUse = d.clk.Now()
			t.pinned = append(t.pinned, m)
			if rm.loading != nil {
				awaits = append(awaits, rm)
			}
			continue
		}
		missing = append(missing, i)
		need += d.footprint(plan, entries[i])
	}
	d.mu.Unlock()
	// Can the room be made at all? Free memory and unpinned models can be
	// had now; pins and activations of other jobs only by waiting for
	// them. A try that would have to wait evicts nothing.
	if need > 0 {
		views, _, _ := d.deviceEntries(dev)
		room, waitable := led.Free(), uint64(0)
		for _, e := range views {
			switch {
			case !e.Pinned:
				room += e.Bytes
			case e.Worker != w.ID() || !slices.Contains(models, e.Model):
				waitable += e.Bytes
			}
		}
		waitable += activationBytes(led)
		if need > room {
			undo()
			if waitable == 0 {
				// Nothing will ever be let go: the stage cannot fit
				// this device as it is (a footprint grew past the plan).
				return t, nil, nil, &NoRoomError{Device: dev, Need: need, Usable: room}
			}
			return t, nil, nil, fmt.Errorf("device %d: %s for a stage, %s to be had now: %w", dev, human(need), human(room), ErrVRAMHeld)
		}
	}
	for _, i := range missing {
		m := models[i]
		res, _, rerr := d.reserve(ctx, w, m, d.footprint(plan, entries[i]))
		if rerr != nil {
			err = rerr
			undo()
			return t, nil, nil, rerr
		}
		rm := &residentModel{model: m, res: res, pins: 1, lastUse: d.clk.Now(), inserted: d.clk.Now(), loading: make(chan struct{})}
		d.mu.Lock()
		byModel[m] = rm
		d.mu.Unlock()
		t.pinned = append(t.pinned, m)
		loads = append(loads, pendingLoad{rm: rm, entry: entries[i]})
	}
	if act > 0 {
		res, _, rerr := d.reserve(ctx, w, fmt.Sprintf(activationsKey, jobID), act)
		if rerr != nil {
			err = rerr
			undo()
			return t, nil, nil, rerr
		}
		t.act = res
	}
	return t, loads, awaits, nil
}

// footprint is what the plan reserves for a model: its planned bytes, or
// the catalog's footprint for a model the plan does not size.
func (d *Dispatcher) footprint(plan Plan, e catalog.Entry) uint64 {
	if b := plan.Bytes(e.ID); b > 0 {
		return b
	}
	return FootprintOf(e, "")
}

// activationBytes sums a device's activation reservations: memory that
// running stages hold and give back when they end.
func activationBytes(led *device.Ledger) uint64 {
	prefix, _, _ := strings.Cut(activationsKey, "%s")
	var b uint64
	for _, r := range led.Snapshot() {
		if strings.HasPrefix(r.Key, prefix) {
			b += r.Bytes
		}
	}
	return b
}

// loadStage loads the models a try reserved, in waves (LoadWaves), and
// waits for those another load was bringing in. Every failed load is
// forgotten, not only the first: an entry left behind with an error would
// fail every later job that needs it.
func (d *Dispatcher) loadStage(ctx context.Context, w *worker.Worker, plan Plan, loads []pendingLoad, awaits []*residentModel) error {
	runWave := func(wave []pendingLoad) {
		var wg sync.WaitGroup
		for _, p := range wave {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := d.clk.Now()
				rep, lerr := d.load(ctx, w, p.entry, plan.loadSpec(p.entry.ID))
				if lerr == nil && rep.VRAMBytes > 0 && uint64(rep.VRAMBytes) != p.rm.res.Bytes() {
					// The worker knows the true footprint; the ledger follows it.
					if rerr := d.opts.Devices.Ledger(w.Device().Index).Resize(p.rm.res, uint64(rep.VRAMBytes)); rerr != nil {
						d.log.Warn().Err(rerr).Str("model", p.entry.ID).Msg("ledger resize after load")
					}
				}
				d.mu.Lock()
				p.rm.loadErr = lerr
				p.rm.loadTook = d.clk.Since(start)
				close(p.rm.loading)
				p.rm.loading = nil
				d.mu.Unlock()
				if lerr == nil && d.opts.Hooks.ModelLoaded != nil {
					d.opts.Hooks.ModelLoaded(p.entry.ID, d.clk.Since(start))
				}
			}()
		}
		wg.Wait()
	}
	// Independent components load in parallel; those that patch another
	// (a LoRA or a ControlNet on its checkpoint or diffusion model, by the
	// loaders' component metadata) load in a later wave, so that a worker
	// never receives one before its base. A failed wave abandons the rest.
	entries := make([]catalog.Entry, len(loads))
	for i, p := range loads {
		entries[i] = p.entry
	}
	var loadErr error
	for _, idx := range LoadWaves(entries) {
		wave := make([]pendingLoad, len(idx))
		for i, k := range idx {
			wave[i] = loads[k]
		}
		if loadErr != nil {
			for _, p := range wave {
				d.abandon(w, p.rm, loadErr)
			}
			continue
		}
		runWave(wave)
		for _, p := range wave {
			if p.rm.loadErr != nil && loadErr == nil {
				loadErr = p.rm.loadErr
			}
		}
	}
	for _, p := range loads {
		if p.rm.loadErr != nil {
			d.drop(w, p.rm)
			if loadErr == nil {
				loadErr = p.rm.loadErr
			}
		}
	}
	if loadErr != nil {
		return loadErr
	}
	for _, rm := range awaits {
		d.mu.Lock()
		ch := rm.loading
		d.mu.Unlock()
		if ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		d.mu.Lock()
		lerr := rm.loadErr
		d.mu.Unlock()
		if lerr != nil {
			return lerr
		}
	}
	return nil
}
