package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// asDiffModule builds sdk/assemblyscript/test/diff.ts with the pinned
// compiler of examples/policy-as, or skips, saying why.
func asDiffModule(t *testing.T) []byte {
	t.Helper()
	return ascBuild(t, filepath.Join(repoRoot(), "sdk", "assemblyscript", "test", "diff.ts"))
}

// ascBuild compiles an AssemblyScript entry file with the pinned compiler
// of examples/policy-as, or skips, saying why.
func ascBuild(t *testing.T, entry string) []byte {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the AssemblyScript SDK's differential test cannot run")
	}
	asc := filepath.Join(repoRoot(), "examples", "policy-as", "node_modules", "assemblyscript", "bin", "asc.js")
	if _, err := os.Stat(asc); err != nil {
		t.Skip("AssemblyScript is not installed (`make policy-as` or `npm ci --prefix examples/policy-as`); the differential test cannot run")
	}
	out := filepath.Join(t.TempDir(), "module.wasm")
	cmd := exec.Command(node, asc, entry, "--runtime", "stub", "--optimize", "--noAssert", "--outFile", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("asc: %v\n%s", err, b)
	}
	wasm, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return wasm
}

// diffPolicy is the Go half of the differential test: the decisions of
// sdk/assemblyscript/test/diff.ts, field by field, through the Go SDK.
type diffPolicy struct{ h uint64 }

func (d *diffPolicy) mix(x uint64) { d.h = (d.h ^ x) * 0x100000001b3 }

func bit(x bool) uint64 {
	if x {
		return 1
	}
	return 0
}

func (d *diffPolicy) header(c *abi.Common) {
	d.h = 0xcbf29ce484222325
	d.mix(uint64(c.Now))
	for _, s := range c.State {
		d.mix(s)
	}
	d.mix(uint64(len(c.Params)))
	for _, p := range c.Params {
		d.mix(math.Float64bits(p))
	}
}

func (d *diffPolicy) models(ms []abi.ModelInfo) {
	d.mix(uint64(len(ms)))
	for _, m := range ms {
		d.mix(m.Bytes)
		d.mix(uint64(m.LoadCost))
	}
}

func (d *diffPolicy) job(j *abi.Job) {
	slack := int64(0)
	if j.HasDeadline {
		slack = int64(j.Slack)
	}
	for _, x := range []uint64{j.Seq, uint64(j.Age), uint64(slack), uint64(j.EstCost), j.VRAM, j.BatchVRAM, uint64(j.Class),
		bit(j.HasDeadline), bit(j.AtStepBoundary), uint64(j.BatchKey), uint64(j.Attempts), uint64(j.Worker), uint64(len(j.Models))} {
		d.mix(x)
	}
	for _, m := range j.Models {
		d.mix(uint64(m))
	}
}

func (d *diffPolicy) workers(ws []abi.Worker) {
	d.mix(uint64(len(ws)))
	for _, w := range ws {
		for _, x := range []uint64{w.FreeVRAM, w.UsableVRAM, uint64(w.Wait), w.H2DBytesPerS, uint64(w.Device), bit(w.Idle),
			bit(w.Degraded), uint64(w.DeviceBusy), uint64(len(w.Resident))} {
			d.mix(x)
		}
		for _, m := range w.Resident {
			d.mix(uint64(m))
		}
	}
}

func (d *diffPolicy) state(c *abi.Common, out *[4]uint64) {
	out[0], out[3] = d.h, c.State[3]+1
}

func (d *diffPolicy) Evict(in *abi.EvictionInput, out *abi.EvictionOutput) abi.Status {
	d.header(&in.Common)
	d.mix(in.Need)
	d.mix(in.Free)
	d.mix(uint64(len(in.Entries)))
	for i, e := range in.Entries {
		for _, x := range []uint64{e.Bytes, uint64(e.SinceUse), uint64(e.SinceInsert), uint64(e.LoadCost), e.Tag,
			uint64(e.Model), uint64(e.Worker), uint64(e.Hits), bit(e.Pinned), math.Float64bits(in.EntryDemand(i))} {
			d.mix(x)
		}
		if !e.Pinned {
			out.Victims = append(out.Victims, uint32(i))
		}
		out.Tags = append(out.Tags, abi.TagUpdate{Entry: uint32(i), Tag: e.Tag + uint64(i) + 1})
	}
	d.mix(uint64(len(in.Ghosts)))
	for _, g := range in.Ghosts {
		d.mix(uint64(g.Ago))
		d.mix(uint64(g.Model))
	}
	d.mix(uint64(len(in.Wanted)))
	for i, w := range in.Wanted {
		for _, x := range []uint64{w.Bytes, uint64(w.LoadCost), uint64(w.Model), uint64(w.Waiting)} {
			d.mix(x)
		}
		if w.Waiting >= 2 {
			out.Prefetch = append(out.Prefetch, uint32(i))
		}
	}
	for i, j := 0, len(out.Victims)-1; i < j; i, j = i+1, j-1 {
		out.Victims[i], out.Victims[j] = out.Victims[j], out.Victims[i]
	}
	d.state(&in.Common, &out.State)
	return abi.StatusOK
}

func (d *diffPolicy) Schedule(in *abi.SchedulingInput, out *abi.SchedulingOutput) abi.Status {
	d.header(&in.Common)
	d.models(in.Models)
	d.mix(uint64(len(in.Queued)))
	for i := range in.Queued {
		d.job(&in.Queued[i])
		out.Dispatch = append(out.Dispatch, uint32(len(in.Queued)-1-i))
	}
	d.mix(uint64(len(in.Running)))
	for i := range in.Running {
		d.job(&in.Running[i])
		if in.Running[i].AtStepBoundary {
			out.Preempt = append(out.Preempt, uint32(i))
		}
	}
	d.workers(in.Workers)
	d.state(&in.Common, &out.State)
	return abi.StatusOK
}

func (d *diffPolicy) Batch(in *abi.BatchingInput, out *abi.BatchingOutput) abi.Status {
	d.header(&in.Common)
	d.models(in.Models)
	d.mix(uint64(in.Lead))
	d.mix(uint64(len(in.Jobs)))
	for i := range in.Jobs {
		d.job(&in.Jobs[i])
	}
	d.workers(in.Workers)
	key := in.Jobs[in.Lead].BatchKey
	out.Batch = append(out.Batch, in.Lead)
	for i := range in.Jobs {
		if uint32(i) != in.Lead && key != 0 && in.Jobs[i].BatchKey == key {
			out.Batch = append(out.Batch, uint32(i))
		}
	}
	out.Wait = time.Duration(d.h & 0xffff)
	d.state(&in.Common, &out.State)
	return abi.StatusOK
}

func (d *diffPolicy) Balance(in *abi.BalancingInput, out *abi.BalancingOutput) abi.Status {
	d.header(&in.Common)
	d.models(in.Models)
	d.job(&in.Job)
	d.workers(in.Workers)
	out.Worker = abi.NoWorker
	for i := range in.Workers {
		if in.Workers[i].Idle {
			out.Worker = uint32(i)
		}
	}
	d.state(&in.Common, &out.State)
	if out.Worker == abi.NoWorker {
		return abi.StatusNoDecision
	}
	return abi.StatusOK
}

func (d *diffPolicy) tier(ms []uint32) {
	d.mix(uint64(len(ms)))
	for _, m := range ms {
		d.mix(uint64(m))
	}
}

func (d *diffPolicy) Route(in *abi.RoutingInput, out *abi.RoutingOutput) abi.Status {
	d.header(&in.Common)
	d.models(in.Models)
	d.mix(in.Random)
	d.job(&in.Job)
	d.mix(uint64(len(in.Nodes)))
	out.Node = abi.NoNode
	for i, n := range in.Nodes {
		for _, x := range []uint64{n.FreeVRAM, n.UsableVRAM, uint64(n.Wait), uint64(n.Delay), n.H2DBytesPerS, n.DiskBytesPerS,
			n.RemoteBytesPerS, uint64(n.Queued), uint64(n.Running), uint64(n.Workers), uint64(n.IdleWorkers), bit(n.Healthy)} {
			d.mix(x)
		}
		d.tier(n.VRAM)
		d.tier(n.RAM)
		d.tier(n.Disk)
		if n.Healthy {
			out.Node = uint32(i)
		}
	}
	d.state(&in.Common, &out.State)
	if out.Node == abi.NoNode {
		return abi.StatusNoDecision
	}
	return abi.StatusOK
}

// TestAssemblyScriptSDKMatchesGo: for every kind, over many seeded inputs
// (with parameters, state words and tags), the AssemblyScript SDK reads
// every field the Go SDK decodes to the same values — both fold them into
// a digest that the answer carries — and writes the same answer bytes:
// victims, prefetch and tags, dispatch and preemptions, a batch and its
// wait, a worker or none, a node or none.
func TestAssemblyScriptSDKMatchesGo(t *testing.T) {
	wasm := asDiffModule(t)
	h := newTestHost(t, Config{})
	ctx := context.Background()
	cm, _, err := h.compile(ctx, sha256.Sum256(wasm), wasm)
	if err != nil {
		t.Fatal(err)
	}
	guest, err := abi.NewGuest(&diffPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range abi.Kinds {
		t.Run(k.String(), func(t *testing.T) {
			// No validation: the module is called directly, so that its
			// answers need not be decisions the host would accept.
			m := &module{rt: h.rt, compiled: cm, kind: k, timeout: h.cfg.CallTimeout, wd: h.wd, pool: instancePool{max: 1}}
			defer m.close()
			for seed := range uint64(40) {
				for i := range 3 {
					in := SampleInput(k, seed, i)
					c := commonOf(in)
					c.Now = int64(seed)*1e9 + 12345
					c.State = [4]uint64{seed, ^seed, 1 << 63, uint64(i)}
					c.Params = []float64{float64(seed) / 3, -1.5, math.Inf(1)}[:seed%4%3]
					if ev, ok := in.(*abi.EvictionInput); ok {
						for j := range ev.Entries {
							ev.Entries[j].Tag = seed<<32 | uint64(j)
						}
					}
					input := encode(in)
					got, err := m.call(ctx, &callInfo{}, input, nil)
					if err != nil {
						t.Fatalf("seed %d input %d: AssemblyScript module: %v", seed, i, err)
					}
					want := guest.Call(k, input)
					if !bytes.Equal(got, want) {
						t.Fatalf("seed %d input %d: AssemblyScript answered\n%x\nthe Go SDK\n%x", seed, i, got, want)
					}
				}
			}
		})
	}
}

func commonOf(in any) *abi.Common {
	switch in := in.(type) {
	case *abi.EvictionInput:
		return &in.Common
	case *abi.SchedulingInput:
		return &in.Common
	case *abi.BatchingInput:
		return &in.Common
	case *abi.BalancingInput:
		return &in.Common
	case *abi.RoutingInput:
		return &in.Common
	}
	return nil
}

func encode(in any) []byte {
	switch in := in.(type) {
	case *abi.EvictionInput:
		return abi.AppendEvictionInput(nil, in)
	case *abi.SchedulingInput:
		return abi.AppendSchedulingInput(nil, in)
	case *abi.BatchingInput:
		return abi.AppendBatchingInput(nil, in)
	case *abi.BalancingInput:
		return abi.AppendBalancingInput(nil, in)
	case *abi.RoutingInput:
		return abi.AppendRoutingInput(nil, in)
	}
	return nil
}

// TestAssemblyScriptHeaderExample compiles the example at the top of the
// AssemblyScript SDK (its import paths pointed at this checkout) and loads
// it as a balancing policy, self-test included: an author copies it first,
// and it once used a constant it did not import (issue 21).
func TestAssemblyScriptHeaderExample(t *testing.T) {
	sdk := filepath.Join(repoRoot(), "sdk", "assemblyscript", "assembly")
	src, err := os.ReadFile(filepath.Join(sdk, "kiln.ts"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)// A policy module's entry file.*?:\n//\n(.*?)//\n`).FindSubmatch(src)
	if m == nil {
		t.Fatal("sdk/assemblyscript/assembly/kiln.ts: no example after \"A policy module's entry file\"")
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, sdk)
	if err != nil {
		t.Fatal(err)
	}
	var example strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(string(m[1]), "\n"), "\n") {
		line = strings.TrimPrefix(strings.TrimPrefix(line, "//"), "   ")
		example.WriteString(strings.ReplaceAll(line, "<path>/sdk/assemblyscript/assembly", filepath.ToSlash(rel)) + "\n")
	}
	entry := filepath.Join(dir, "example.ts")
	if err := os.WriteFile(entry, []byte(example.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	wasm := ascBuild(t, entry)
	h := newTestHost(t, Config{})
	if _, err := h.Load(context.Background(), abi.KindBalancing, "header-example", wasm, true, "test"); err != nil {
		t.Fatalf("load the header example:\n%s\n%v", example.String(), err)
	}
	jobs, workers, _ := sampleViews()
	if id, ok := h.Balancer().Place(jobs[0], workers); !ok || id != "w1" {
		t.Errorf("the header example placed the job on %q, %v; want the idle worker w1", id, ok)
	}
	if v := kindInfo(t, h, abi.KindBalancing).Versions; faultsOf(v, "header-example") != 0 {
		t.Errorf("the header example faulted: %+v", v)
	}
}

func faultsOf(vs []VersionInfo, name string) int64 {
	for _, v := range vs {
		if v.Name == name {
			return v.Faults
		}
	}
	return -1
}
