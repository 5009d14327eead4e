package conformance

import (
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

func TestHelloReply(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, rep := startHello(t, w, fastOptions)
		if num(rep["protocol"]) != wire.ProtocolVersion {
			t.Errorf("protocol = %v, want %d", rep["protocol"], wire.ProtocolVersion)
		}
		if num(rep["pid"]) != int64(p.cmd.Process.Pid) {
			t.Errorf("pid = %v, want %d", rep["pid"], p.cmd.Process.Pid)
		}
		if name, _ := rep["name"].(string); name == "" {
			t.Errorf("name is empty")
		}
		caps, _ := rep["capabilities"].([]any)
		found := false
		for _, c := range caps {
			found = found || c == "cancel"
		}
		if !found {
			t.Errorf("capabilities %v lack cancel", caps)
		}
	})
}

func TestPingEchoesNonce(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := startHello(t, w, fastOptions)
		for _, nonce := range []uint64{0, 42, 1 << 40, ^uint64(0)} {
			f := p.call(wire.TypePing, wire.PingRequest{Nonce: nonce})
			var got uint64
			switch x := f.body["nonce"].(type) {
			case uint64:
				got = x
			default:
				got = uint64(num(x))
			}
			if f.hdr.Type != wire.TypeOK || got != nonce {
				t.Errorf("ping %d: %s %v", nonce, f.hdr.Type, f.body)
			}
		}
	})
}

func TestHelloRefusals(t *testing.T) {
	for _, tc := range []struct {
		name     string
		typ      string
		protocol int
		wantCode string
	}{
		{name: "first frame not hello", typ: wire.TypePing, wantCode: wire.ErrCodeBadRequest},
		{name: "protocol 2", typ: wire.TypeHello, protocol: 2, wantCode: wire.ErrCodeUnsupported},
		{name: "protocol 0", typ: wire.TypeHello, protocol: 0, wantCode: wire.ErrCodeUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEach(t, func(t *testing.T, w impl) {
				p := start(t, w)
				var body any = wire.PingRequest{Nonce: 1}
				if tc.typ == wire.TypeHello {
					body = p.helloBody(tc.protocol, fastOptions)
				}
				f := p.call(tc.typ, body)
				if c := code(t, f); c != tc.wantCode {
					t.Errorf("code %s, want %s", c, tc.wantCode)
				}
				p.waitEOF(10 * time.Second)
				p.waitExit(10 * time.Second)
			})
		})
	}
}

func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		id       uint64 // 0: a fresh id
		typ      string
		body     func(t *testing.T, load wire.LoadRequest) any
		wantCode string
	}{
		{name: "id 0", typ: wire.TypePing, id: 0, wantCode: wire.ErrCodeBadRequest,
			body: func(*testing.T, wire.LoadRequest) any { return wire.PingRequest{Nonce: 1} }},
		{name: "second hello", typ: wire.TypeHello, wantCode: wire.ErrCodeBadRequest,
			body: func(*testing.T, wire.LoadRequest) any { return wire.HelloRequest{Protocol: 1, OutputDir: "/tmp"} }},
		{name: "unknown type", typ: "teleport", wantCode: wire.ErrCodeUnsupported,
			body: func(*testing.T, wire.LoadRequest) any { return map[string]any{} }},
		{name: "unload unknown model", typ: wire.TypeUnload, wantCode: wire.ErrCodeNotLoaded,
			body: func(*testing.T, wire.LoadRequest) any {
				return wire.UnloadRequest{Model: "checkpoints/none.safetensors"}
			}},
		{name: "load size mismatch", typ: wire.TypeLoad, wantCode: wire.ErrCodeBadRequest,
			body: func(t *testing.T, l wire.LoadRequest) any {
				l.Model, l.Bytes = "checkpoints/other.safetensors", l.Bytes+1
				return l
			}},
		{name: "load missing file", typ: wire.TypeLoad, wantCode: wire.ErrCodeFailed,
			body: func(t *testing.T, l wire.LoadRequest) any {
				l.Model, l.Path = "checkpoints/gone.safetensors", filepath.Join(t.TempDir(), "gone")
				return l
			}},
		{name: "load a directory", typ: wire.TypeLoad, wantCode: wire.ErrCodeBadRequest,
			body: func(t *testing.T, l wire.LoadRequest) any {
				l.Model, l.Path = "checkpoints/dir.safetensors", t.TempDir()
				return l
			}},
		{name: "ping with a string nonce", typ: wire.TypePing, wantCode: wire.ErrCodeBadRequest,
			body: func(*testing.T, wire.LoadRequest) any { return map[string]any{"nonce": "x"} }},
		{name: "run a model not loaded", typ: wire.TypeRun, wantCode: wire.ErrCodeNotLoaded,
			body: func(*testing.T, wire.LoadRequest) any {
				wf := txt2img(64, 64, 1, 2, "x")
				wf["4"].(map[string]any)["inputs"].(map[string]any)["ckpt_name"] = "absent.safetensors"
				return runRequest("job-notloaded", wf)
			}},
		{name: "run with an unsafe job id", typ: wire.TypeRun, wantCode: wire.ErrCodeBadRequest,
			body: func(*testing.T, wire.LoadRequest) any { return runRequest("../escape", txt2img(64, 64, 1, 2, "x")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEach(t, func(t *testing.T, w impl) {
				p, load := loaded(t, w, fastOptions)
				id := uint64(1000)
				if tc.id == 0 && tc.name == "id 0" {
					id = 0
				}
				p.sendID(id, tc.typ, tc.body(t, load))
				f := p.waitTerminal(id, 20*time.Second, nil)
				if c := code(t, f); c != tc.wantCode {
					t.Errorf("code %s (%v), want %s", c, f.body["message"], tc.wantCode)
				}
				// The worker keeps going.
				if f := p.call(wire.TypePing, wire.PingRequest{Nonce: 9}); f.hdr.Type != wire.TypeOK {
					t.Errorf("ping after the error: %s %v", f.hdr.Type, f.body)
				}
			})
		})
	}
}

// runAndCollect runs a job and returns its progress frames and terminal frame,
// checking that every frame carries the run's id and the job's id.
func runAndCollect(t *testing.T, p *worker, req wire.RunRequest) ([]frame, frame) {
	t.Helper()
	id := p.send(wire.TypeRun, req)
	var progress []frame
	term := p.waitTerminal(id, 60*time.Second, func(f frame) {
		if f.hdr.ID != id {
			t.Fatalf("frame %s for unknown id %d", f.hdr.Type, f.hdr.ID)
		}
		if f.hdr.Type == wire.TypeProgress {
			if f.body["job_id"] != req.JobID {
				t.Errorf("progress job_id %v, want %s", f.body["job_id"], req.JobID)
			}
			progress = append(progress, f)
		}
	})
	return progress, term
}

func TestLoadRunStatsUnload(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := startHello(t, w, fastOptions)
		load := synthModel(t)
		f := p.call(wire.TypeLoad, load)
		if f.hdr.Type != wire.TypeOK || f.body["model"] != ModelID || num(f.body["vram_bytes"]) <= 0 {
			t.Fatalf("load: %s %v", f.hdr.Type, f.body)
		}
		if sum, _ := f.body["checksum"].(string); !regexp.MustCompile(`^[0-9a-f]+$`).MatchString(sum) {
			t.Errorf("checksum %q is not a hex digest", sum)
		}
		vram := num(f.body["vram_bytes"])
		// A second load of the same model is answered ok without a second copy.
		if f := p.call(wire.TypeLoad, load); f.hdr.Type != wire.TypeOK {
			t.Fatalf("reload: %s %v", f.hdr.Type, f.body)
		}

		const steps = 4
		progress, term := runAndCollect(t, p, runRequest("job-1", txt2img(64, 48, 2, steps, "conf/img")))
		if term.hdr.Type != wire.TypeResult {
			t.Fatalf("run: %s %v", term.hdr.Type, term.body)
		}
		var stepValues []int64
		starts := map[any]bool{}
		for _, f := range progress {
			if num(f.body["max"]) == 0 {
				starts[f.body["node"]] = true
				continue
			}
			if f.body["node"] != "3" || num(f.body["max"]) != steps {
				t.Errorf("step progress %v, want node 3 of %d", f.body, steps)
			}
			stepValues = append(stepValues, num(f.body["value"]))
		}
		if len(stepValues) != steps || stepValues[0] != 1 || stepValues[steps-1] != steps {
			t.Errorf("step values %v, want 1..%d", stepValues, steps)
		}
		if !starts["3"] || !starts["9"] {
			t.Errorf("node starts %v lack the sampler or the save node", starts)
		}
		outs, _ := term.body["outputs"].([]any)
		if len(outs) != 2 {
			t.Fatalf("outputs %v, want 2 images", term.body["outputs"])
		}
		for _, o := range outs {
			out := o.(map[string]any)
			if out["node"] != "9" || out["type"] != "output" || out["subfolder"] != "job-1/conf" {
				t.Errorf("output %v", out)
			}
			fh, err := os.Open(filepath.Join(p.outDir, out["subfolder"].(string), out["filename"].(string)))
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(fh)
			fh.Close()
			if err != nil {
				t.Fatalf("output %v is not a PNG: %v", out, err)
			}
			if b := img.Bounds(); b.Dx() != 64 || b.Dy() != 48 || num(out["width"]) != 64 || num(out["height"]) != 48 {
				t.Errorf("image %v is %v, want 64×48", out, b)
			}
		}

		st := p.call(wire.TypeStats, map[string]any{})
		models, _ := st.body["models"].([]any)
		if st.hdr.Type != wire.TypeOK || len(models) != 1 || num(st.body["jobs_done"]) != 1 ||
			num(st.body["vram_used"]) != vram || num(st.body["running"]) != 0 || num(st.body["rss_bytes"]) <= 0 {
			t.Errorf("stats: %s %v", st.hdr.Type, st.body)
		}
		un := p.call(wire.TypeUnload, wire.UnloadRequest{Model: ModelID})
		if un.hdr.Type != wire.TypeOK || num(un.body["freed_bytes"]) != vram {
			t.Errorf("unload: %s %v", un.hdr.Type, un.body)
		}
		st = p.call(wire.TypeStats, map[string]any{})
		if models, _ := st.body["models"].([]any); len(models) != 0 || num(st.body["vram_used"]) != 0 {
			t.Errorf("stats after unload: %v", st.body)
		}
	})
}

func TestRerunOverwritesOutputs(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := loaded(t, w, fastOptions)
		var names [2][]string
		for i := range names {
			req := runRequest("job-again", txt2img(32, 32, 1, 2, "again"))
			req.Attempt = i + 1
			_, term := runAndCollect(t, p, req)
			if term.hdr.Type != wire.TypeResult {
				t.Fatalf("attempt %d: %s %v", i+1, term.hdr.Type, term.body)
			}
			for _, o := range term.body["outputs"].([]any) {
				names[i] = append(names[i], o.(map[string]any)["filename"].(string))
			}
		}
		files, _ := filepath.Glob(filepath.Join(p.outDir, "job-again", "*.png"))
		if len(files) != 1 || len(names[0]) != 1 || names[0][0] != names[1][0] {
			t.Errorf("files %v, names %v: a re-run must overwrite its outputs", files, names)
		}
	})
}

func TestPipelining(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := loaded(t, w, slowOptions)
		// A long run, then pings and stats pipelined behind it without waiting.
		run := p.send(wire.TypeRun, runRequest("job-long", txt2img(512, 512, 1, 10000, "long")))
		var pings []uint64
		for i := 0; i < 5; i++ {
			pings = append(pings, p.send(wire.TypePing, wire.PingRequest{Nonce: uint64(i)}))
		}
		stats := p.send(wire.TypeStats, map[string]any{})
		second := p.send(wire.TypeRun, runRequest("job-short", txt2img(32, 32, 1, 1, "short")))
		answered := map[uint64]frame{}
		deadline := time.Now().Add(20 * time.Second)
		for len(answered) < len(pings)+2 {
			f := p.next(time.Until(deadline))
			if f.hdr.Type == wire.TypeProgress {
				continue
			}
			if f.hdr.ID == run {
				t.Fatalf("the long run ended (%s %v) before the requests behind it", f.hdr.Type, f.body)
			}
			answered[f.hdr.ID] = f
		}
		for i, id := range pings {
			if f := answered[id]; f.hdr.Type != wire.TypeOK || num(f.body["nonce"]) != int64(i) {
				t.Errorf("ping %d: %v", i, f)
			}
		}
		if f := answered[stats]; f.hdr.Type != wire.TypeOK || num(f.body["running"]) < 1 {
			t.Errorf("stats during a run: %s %v", f.hdr.Type, f.body)
		}
		if f := answered[second]; f.hdr.Type != wire.TypeResult {
			t.Errorf("short run behind a long one: %s %v", f.hdr.Type, f.body)
		}
		p.send(wire.TypeCancel, wire.CancelRequest{Target: run})
		if f := p.waitTerminal(run, 10*time.Second, nil); code(t, f) != wire.ErrCodeCancelled {
			t.Errorf("long run after cancel: %v", f.body)
		}
	})
}

func TestCancel(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := loaded(t, w, slowOptions)
		run := p.send(wire.TypeRun, runRequest("job-cancel", txt2img(512, 512, 1, 10000, "c")))
		for { // wait for the first sampler step
			f := p.next(20 * time.Second)
			if f.hdr.ID == run && f.hdr.Type == wire.TypeProgress && num(f.body["max"]) > 0 {
				break
			}
			if f.hdr.ID == run && f.hdr.Type != wire.TypeProgress {
				t.Fatalf("run ended early: %s %v", f.hdr.Type, f.body)
			}
		}
		cancelled := time.Now()
		cancel := p.send(wire.TypeCancel, wire.CancelRequest{Target: run})
		unknown := p.send(wire.TypeCancel, wire.CancelRequest{Target: 999999})
		got := map[uint64]frame{}
		for len(got) < 3 {
			f := p.next(10 * time.Second)
			if f.hdr.Type == wire.TypeProgress {
				if _, done := got[run]; done && f.hdr.ID == run {
					t.Fatalf("progress after the run's terminal frame")
				}
				continue
			}
			got[f.hdr.ID] = f
		}
		if f := got[cancel]; f.hdr.Type != wire.TypeOK {
			t.Errorf("cancel: %s %v", f.hdr.Type, f.body)
		}
		if f := got[unknown]; f.hdr.Type != wire.TypeOK {
			t.Errorf("cancel of an unknown id: %s %v", f.hdr.Type, f.body)
		}
		if c := code(t, got[run]); c != wire.ErrCodeCancelled {
			t.Errorf("cancelled run ended with %s", c)
		}
		if d := time.Since(cancelled); d > 5*time.Second {
			t.Errorf("cancel took %s, the kernel waits 5s", d)
		}
		// Nothing follows the terminal frame: a ping round trip flushes the stream.
		ping := p.send(wire.TypePing, wire.PingRequest{Nonce: 1})
		p.waitTerminal(ping, 10*time.Second, func(f frame) {
			if f.hdr.ID == run {
				t.Errorf("frame %s for the run after its terminal frame", f.hdr.Type)
			}
		})
		if f := p.call(wire.TypeStats, map[string]any{}); num(f.body["running"]) != 0 {
			t.Errorf("running = %v after cancel", f.body["running"])
		}
	})
}

func TestConcurrentRuns(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := loaded(t, w, fastOptions)
		ids := map[uint64]string{}
		for i, job := range []string{"job-a", "job-b", "job-c"} {
			ids[p.send(wire.TypeRun, runRequest(job, txt2img(32, 32, 1, 3+i, job)))] = job
		}
		done := map[uint64]bool{}
		deadline := time.Now().Add(30 * time.Second)
		for len(done) < len(ids) {
			f := p.next(time.Until(deadline))
			job, ok := ids[f.hdr.ID]
			if !ok {
				t.Fatalf("frame for unknown id %d", f.hdr.ID)
			}
			if done[f.hdr.ID] {
				t.Fatalf("frame %s for %s after its terminal frame", f.hdr.Type, job)
			}
			if f.hdr.Type == wire.TypeProgress {
				if f.body["job_id"] != job {
					t.Errorf("progress for id %d says job %v, want %s", f.hdr.ID, f.body["job_id"], job)
				}
				continue
			}
			if f.hdr.Type != wire.TypeResult || f.body["job_id"] != job {
				t.Errorf("%s: %s %v", job, f.hdr.Type, f.body)
			}
			done[f.hdr.ID] = true
		}
	})
}

func TestExitOnEOF(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := loaded(t, w, slowOptions)
		p.send(wire.TypeRun, runRequest("job-eof", txt2img(512, 512, 1, 10000, "e")))
		p.next(20 * time.Second) // the run has started
		p.conn.Close()
		if c := p.waitExit(10 * time.Second); c != 0 {
			t.Errorf("exit status %d after end-of-file, want 0", c)
		}
	})
}

func TestExitOnSIGTERM(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := loaded(t, w, fastOptions)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.waitExit(10 * time.Second)
	})
}

func TestMalformedFrameEndsConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{name: "trailing bytes", raw: []byte{0, 0, 0, 0x0c, 0x82, 0xa2, 'i', 'd', 0x05, 0xa4, 't', 'y', 'p', 'e', 0xa1, 'x'}},
		{name: "zero length", raw: []byte{0, 0, 0, 0}},
		{name: "oversize length", raw: []byte{0x01, 0, 0, 1}},
		{name: "header not a map", raw: []byte{0, 0, 0, 2, 0x91, 0xc0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEach(t, func(t *testing.T, w impl) {
				p, _ := startHello(t, w, fastOptions)
				if _, err := p.conn.Write(tc.raw); err != nil {
					t.Fatal(err)
				}
				p.waitEOF(10 * time.Second)
				p.waitExit(10 * time.Second)
			})
		})
	}
}

func TestCrashMidRunLeavesNoTerminalFrame(t *testing.T) {
	forEach(t, func(t *testing.T, w impl) {
		p, _ := loaded(t, w, fastOptions, "KILN_SIM_CRASH_AFTER_JOBS=1")
		run := p.send(wire.TypeRun, runRequest("job-crash", txt2img(32, 32, 1, 5, "crash")))
		steps := 0
		for f := range p.frames {
			if f.hdr.ID != run || f.hdr.Type != wire.TypeProgress {
				t.Fatalf("frame %s %v from a crashing run", f.hdr.Type, f.body)
			}
			if num(f.body["max"]) > 0 {
				steps++
			}
		}
		if steps == 0 {
			t.Errorf("no step reported before the crash")
		}
		if c := p.waitExit(10 * time.Second); c != 3 {
			t.Errorf("exit status %d, want 3", c)
		}
		if files, _ := filepath.Glob(filepath.Join(p.outDir, "job-crash", "*.png")); len(files) != 0 {
			t.Errorf("a crashed run left outputs %v", files)
		}
	})
}
