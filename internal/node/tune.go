package node

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kiln-gpu/kiln/internal/api"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/sim"
	"github.com/kiln-gpu/kiln/internal/tune"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// openTune builds the background tuner (tune.auto) on the arrival
// recorder, the policy host and the experiment controller. It is built
// whether or not tune.auto is on, so that GET /v1/tune says that it is
// off; runTune starts its loop only when it is on.
func (n *Node) openTune() error {
	if n.Arrivals == nil {
		return nil
	}
	t, err := tune.NewAuto(tune.AutoOptions{
		Config: n.cfg.Tune,
		Sources: tune.Sources{
			Requests:    n.Arrivals.Requests,
			Node:        n.simNode,
			Active:      n.activePolicy,
			Experiments: n.Experiments,
		},
		Clock: n.opts.Clock, Seed: uint64(n.opts.Clock.Now().UnixNano()),
		Log: logging.Component(n.opts.Log, "tune"),
	})
	if err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	n.Tuner = t
	n.Metrics.Register(t)
	return nil
}

// traceSource hands the HTTP API the arrival recorder through its own
// interface (api.TraceSource), so that api does not import the tuner;
// nil (no route) when there is no recorder, never a nil *tune.Recorder in
// a non-nil interface.
func (n *Node) traceSource() api.TraceSource {
	if n.Arrivals == nil {
		return nil
	}
	return n.Arrivals
}

// tuneStatus is the tuner's status for GET /v1/tune (api.Deps.TuneStatus);
// nil when there is no tuner.
func (n *Node) tuneStatus() func() any {
	if n.Tuner == nil {
		return nil
	}
	return func() any { return n.Tuner.Status() }
}

// runTune starts the tuner's loop when tune.auto is on; the returned
// function waits for it after ctx ends.
func (n *Node) runTune(ctx context.Context) (wait func()) {
	if n.Tuner == nil || !n.cfg.Tune.Auto {
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The active policies are known once the host has restored them.
		if err := n.Policies.WaitReady(ctx); err != nil {
			return
		}
		n.Tuner.Run(ctx)
	}()
	return wg.Wait
}

// simNode describes this node to the simulator: its devices as they
// report themselves, its config's tiers, workers and cost model, the
// active policies with their parameters, and the catalog's models.
func (n *Node) simNode() (sim.Config, []sim.Model, error) {
	cfg := SimConfig(n.cfg)
	cfg.Devices = nil
	for _, d := range n.Devices.Devices() {
		in := d.Info()
		cfg.Devices = append(cfg.Devices, device.SimDeviceConfig{Name: in.Name, MemoryBytes: in.MemoryBytes,
			H2DBytesPerS: in.H2DBytesPerS, ComputeFactor: in.ComputeFactor})
	}
	// The built-ins' native build gives the same answers as their WASM
	// build, faster; the searches run many simulations.
	cfg.Policies.NativeBuiltins = true
	for _, k := range abi.Kinds {
		name, params, err := n.activePolicy(k)
		if err != nil {
			return sim.Config{}, nil, err
		}
		// A module loaded through the API cannot run in the simulator; the
		// config's choice of that kind stands in for it.
		if policy.Builtin(k, name) != nil {
			cfg = tune.WithPolicy(cfg, k, name, params)
		}
	}
	entries, err := n.Catalog.List()
	if err != nil {
		return sim.Config{}, nil, fmt.Errorf("catalog: %w", err)
	}
	models := make([]sim.Model, 0, len(entries))
	for _, e := range entries {
		b := e.NominalBytes
		if b <= 0 {
			b = e.Bytes
		}
		models = append(models, sim.Model{ID: e.ID, Bytes: b, Family: e.Family})
	}
	if len(models) == 0 {
		return sim.Config{}, nil, errors.New("the catalog has no models")
	}
	return cfg, models, nil
}

// activePolicy names kind k's active policy and its parameters now.
func (n *Node) activePolicy(k abi.Kind) (string, map[string]float64, error) {
	a, err := n.Policies.ActiveArm(k)
	if err != nil {
		return "", nil, err
	}
	return a.Name(), a.Params(), nil
}
