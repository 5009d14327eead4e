package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/kiln-gpu/kiln/internal/clock"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// socketpair returns both ends of a Unix socketpair as net.Conns, as the
// kernel and a worker see them.
func socketpair(t *testing.T) (kernel, worker net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("file conn: %v", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// TestServeSocketpair drives the sim through the real protocol on a
// socketpair: hello with cost options, load, run with progress, stats.
func TestServeSocketpair(t *testing.T) {
	kernel, worker := socketpair(t)
	s := newSim(zerolog.Nop(), clock.Real())
	t.Cleanup(s.close)
	errc := make(chan error, 1)
	go func() { errc <- wire.Serve(context.Background(), worker, s) }()

	// A deadline on the kernel's end bounds every read below.
	if err := kernel.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(kernel)
	call := func(id uint64, typ string, body any) (wire.Header, []wire.Progress, []byte) {
		t.Helper()
		if err := wire.WriteFrame(kernel, wire.Header{ID: id, Type: typ}, body); err != nil {
			t.Fatalf("write %s: %v", typ, err)
		}
		var prog []wire.Progress
		for {
			hdr, raw, err := wire.ReadFrame(r)
			if err != nil {
				t.Fatalf("read reply to %s: %v", typ, err)
			}
			if hdr.ID != id {
				t.Fatalf("reply id %d, want %d", hdr.ID, id)
			}
			if hdr.Type == wire.TypeError {
				var er wire.ErrorReply
				_ = wire.DecodeBody(raw, &er)
				t.Fatalf("%s failed: %+v", typ, er)
			}
			if hdr.Type != wire.TypeProgress {
				return hdr, prog, raw
			}
			var p wire.Progress
			if err := wire.DecodeBody(raw, &p); err != nil {
				t.Fatal(err)
			}
			if p.Max > 0 { // Max 0 frames mark node starts, not steps
				prog = append(prog, p)
			}
		}
	}

	out := t.TempDir()
	_, _, raw := call(1, wire.TypeHello, wire.HelloRequest{
		Protocol: wire.ProtocolVersion, WorkerID: "w0", OutputDir: out,
		Device:  wire.DeviceInfo{MemoryBytes: 80 * gib, H2DBandwidth: 25.13e9, ComputeFactor: 1},
		Options: map[string]any{"cost": map[string]any{"time_scale": 0.001, "load_overhead_seconds": 0.001}},
	})
	var hello wire.HelloReply
	if err := wire.DecodeBody(raw, &hello); err != nil || hello.Name != Name {
		t.Fatalf("hello reply %+v, %v", hello, err)
	}

	h := &harness{t: t, store: t.TempDir()}
	for i, m := range []struct {
		id, family string
		nominal    int64
	}{
		{"checkpoints/v1-5-pruned-emaonly.safetensors", "sd15", 2_130_000_000},
		{"loras/epi_noiseoffset2.safetensors", "lora", 135_000_000},
	} {
		p, size := h.synth(m.id, m.family, m.nominal)
		_, _, raw := call(uint64(10+i), wire.TypeLoad, wire.LoadRequest{Model: m.id, Path: p, Bytes: size, Family: m.family})
		var lr wire.LoadReply
		if err := wire.DecodeBody(raw, &lr); err != nil || lr.VRAMBytes != m.nominal {
			t.Fatalf("load reply %+v, %v", lr, err)
		}
	}

	// Through msgpack, the workflow's numbers arrive as int64/float64.
	wf := loadWorkflow(t, "comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json")
	hdr, prog, raw := call(20, wire.TypeRun, wire.RunRequest{JobID: "sock", Workflow: wf})
	var res wire.RunResult
	if err := wire.DecodeBody(raw, &res); err != nil || hdr.Type != wire.TypeResult {
		t.Fatalf("run reply %s %+v, %v", hdr.Type, res, err)
	}
	if len(prog) != 20 || len(res.Outputs) != 1 {
		t.Fatalf("%d progress, outputs %+v", len(prog), res.Outputs)
	}
	if w, ht := decodePNG(t, filepath.Join(out, "sock", res.Outputs[0].Filename)); w != 512 || ht != 512 {
		t.Errorf("PNG %d×%d", w, ht)
	}

	_, _, raw = call(30, wire.TypeStats, map[string]any{})
	var st wire.StatsReply
	if err := wire.DecodeBody(raw, &st); err != nil || st.JobsDone != 1 || len(st.Models) != 2 {
		t.Fatalf("stats %+v, %v", st, err)
	}

	kernel.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve() = %v after the kernel closed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the kernel closed")
	}
}
