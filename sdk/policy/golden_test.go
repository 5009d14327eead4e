package policy

import (
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// updateGolden rewrites testdata/golden/*.hex from the codec as it is. Do
// it only for a deliberate change of the wire format (a new ABI version):
// the files are the bytes third-party modules were built against.
var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden from the current codec")

// goldenJob and goldenWorker fill every field with a distinct value, so
// that a field written at another offset, with another width or into
// another flag bit changes the bytes.
func goldenJob(seq uint64, models []uint32, worker uint32) Job {
	return Job{Seq: seq, Class: ClassBatch, Attempts: 3 + uint32(seq), Age: time.Duration(0x0102030405 + seq),
		Slack: -time.Duration(0x0a0b0c + seq), HasDeadline: true, EstCost: time.Duration(0x1112131415 + seq),
		VRAM: 0x2122232425 + seq, BatchVRAM: 0x3132333435 + seq, BatchKey: 7 + uint32(seq), Models: models,
		Worker: worker, AtStepBoundary: seq%2 == 0}
}

func goldenWorker(i uint32, resident []uint32) Worker {
	return Worker{Device: 0x41 + i, Idle: i%2 == 0, Degraded: i%2 == 1, DeviceBusy: 0x51 + i,
		FreeVRAM: 0x6162636465 + uint64(i), UsableVRAM: 0x7172737475 + uint64(i), Wait: time.Duration(0x8182838485 + int64(i)),
		H2DBytesPerS: 0x9192939495 + uint64(i), Resident: resident}
}

func goldenCommon() Common {
	return Common{Now: 0x1718191a1b1c1d1e, State: [4]uint64{0xa1, 0xa2a3, 0xa4a5a6, 1 << 63}, Params: []float64{1.5, -2, 1e9}}
}

func goldenModels() []ModelInfo {
	return []ModelInfo{{Bytes: 0xb1b2b3, LoadCost: time.Duration(0xc1c2c3)}, {Bytes: 0xb4b5b6, LoadCost: -1}, {Bytes: 1 << 40}}
}

// goldenCases are representative inputs and answers of every kind, with
// every record type, flag and list, encoded by the codec.
func goldenCases() map[string]func() []byte {
	return map[string]func() []byte{
		"eviction-input": func() []byte {
			return AppendEvictionInput(nil, &EvictionInput{Common: goldenCommon(), Need: 0xd1d2d3d4, Free: 0xd5d6,
				Entries: []Entry{
					{Model: 2, Worker: 1, Bytes: 0xe1e2e3e4e5, SinceUse: time.Duration(0xe6e7), SinceInsert: time.Duration(0xe8e9ea),
						LoadCost: time.Duration(0xebec), Hits: 0xed, Pinned: true, Tag: 0xf1f2f3f4f5f6f7f8},
					{Model: 0, Worker: NoWorker, Bytes: 3, SinceUse: -5, Hits: 1, Tag: 9},
				},
				Ghosts: []Ghost{{Model: 4, Ago: time.Duration(0x0f0e0d)}, {Model: 5, Ago: 1}},
				Wanted: []Wanted{{Model: 6, Bytes: 0x121314, LoadCost: time.Duration(0x151617), Waiting: 0x18}},
			})
		},
		"eviction-output": func() []byte {
			return AppendEvictionOutput(nil, StatusOK, &EvictionOutput{State: [4]uint64{1, 2, 3, 4}, Victims: []uint32{1, 0},
				Prefetch: []uint32{0}, Tags: []TagUpdate{{Entry: 1, Tag: 0x2122232425262728}}})
		},
		"scheduling-input": func() []byte {
			return AppendSchedulingInput(nil, &SchedulingInput{Common: goldenCommon(), Models: goldenModels(),
				Queued:  []Job{goldenJob(1, []uint32{0, 1}, NoWorker), goldenJob(2, nil, NoWorker)},
				Running: []Job{goldenJob(3, []uint32{2}, 1)},
				Workers: []Worker{goldenWorker(0, []uint32{1, 2}), goldenWorker(1, nil), goldenWorker(2, []uint32{0})},
			})
		},
		"scheduling-output": func() []byte {
			return AppendSchedulingOutput(nil, StatusNoDecision, &SchedulingOutput{State: [4]uint64{5}, Dispatch: []uint32{1, 0}, Preempt: []uint32{0}})
		},
		"batching-input": func() []byte {
			return AppendBatchingInput(nil, &BatchingInput{Common: goldenCommon(), Lead: 1, Models: goldenModels(),
				Jobs:    []Job{goldenJob(4, []uint32{2}, NoWorker), goldenJob(5, []uint32{0, 2}, NoWorker)},
				Workers: []Worker{goldenWorker(3, nil), goldenWorker(4, []uint32{1})},
			})
		},
		"batching-output": func() []byte {
			return AppendBatchingOutput(nil, StatusOK, &BatchingOutput{State: [4]uint64{0, 6}, Batch: []uint32{1, 0}, Wait: time.Duration(0x313233)})
		},
		"balancing-input": func() []byte {
			return AppendBalancingInput(nil, &BalancingInput{Common: goldenCommon(), Models: goldenModels(),
				Job:     goldenJob(6, []uint32{0, 2}, NoWorker),
				Workers: []Worker{goldenWorker(5, []uint32{2}), goldenWorker(6, nil)},
			})
		},
		"balancing-output": func() []byte {
			return AppendBalancingOutput(nil, StatusOK, &BalancingOutput{State: [4]uint64{0, 0, 7}, Worker: 1})
		},
		"routing-input": func() []byte {
			return AppendRoutingInput(nil, &RoutingInput{Common: goldenCommon(), Random: 0x4142434445464748, Models: goldenModels(),
				Job: goldenJob(7, []uint32{1, 2}, NoWorker),
				Nodes: []Node{
					{Healthy: true, Queued: 0x51, Running: 0x52, Workers: 0x53, IdleWorkers: 0x54, FreeVRAM: 0x5556575859,
						UsableVRAM: 0x5a5b5c5d5e, Wait: time.Duration(0x616263), Delay: time.Duration(0x646566), H2DBytesPerS: 0x676869,
						DiskBytesPerS: 0x6a6b6c, RemoteBytesPerS: 0x6d6e6f, VRAM: []uint32{1}, RAM: []uint32{1, 2}, Disk: []uint32{2}},
					{Queued: 1, Wait: -1, RAM: []uint32{2}},
				},
			})
		},
		"routing-output": func() []byte {
			return AppendRoutingOutput(nil, StatusOK, &RoutingOutput{State: [4]uint64{8}, Node: 1})
		},
		"params": func() []byte {
			return AppendParams(nil, []Param{{Name: "alpha", Type: ParamFloat, Default: 0.5, Min: 0, Max: 1},
				{Name: "n.max_2", Type: ParamInt, Default: 3, Min: 1, Max: 9}, {Name: "on", Type: ParamBool, Default: 1, Max: 1}})
		},
	}
}

// TestCodecMatchesGoldenBytes pins the wire format: every encoder must
// write exactly the bytes the codec of ABI 1.2 wrote (testdata/golden,
// captured from the hand-written codec before it was generated), but for
// the minor version in an input's header, and
// decoding them and encoding again must give the same bytes. The ABI is a
// contract with modules built elsewhere; a layout that moves a field
// breaks them silently, so this test is what a generated codec answers to.
func TestCodecMatchesGoldenBytes(t *testing.T) {
	for name, encode := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			got := encode()
			path := filepath.Join("testdata", "golden", name+".hex")
			if *updateGolden {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(hexLines(got)), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want, err := hex.DecodeString(strings.Join(strings.Fields(string(raw)), ""))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if strings.HasSuffix(name, "-input") {
				// An input's header carries the host's minor version: a
				// later minor writes its own there, and the same bytes
				// elsewhere (its new fields are zero in these cases, as
				// the reserved slots they took were).
				if len(want) < 4 || want[2] != 2 || want[3] != 0 {
					t.Fatalf("%s: not an input of ABI 1.2", path)
				}
				if len(got) < 4 || int(got[2])|int(got[3])<<8 != ABIMinor {
					t.Fatalf("the header says minor %x, want %d", got[2:4], ABIMinor)
				}
				want = append([]byte(nil), want...)
				want[2], want[3] = got[2], got[3]
			}
			if string(got) != string(want) {
				t.Fatalf("encoded bytes differ from %s:\n got %x\nwant %x", path, got, want)
			}
			again, err := reencode(name, got)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if string(again) != string(want) {
				t.Errorf("decode then encode changed the bytes:\n got %x\nwant %x", again, want)
			}
		})
	}
}

// reencode decodes b as the golden case name says and encodes it again.
func reencode(name string, b []byte) ([]byte, error) {
	switch name {
	case "eviction-input":
		var in EvictionInput
		err := DecodeEvictionInput(b, &in)
		return AppendEvictionInput(nil, &in), err
	case "eviction-output":
		var out EvictionOutput
		st, err := DecodeEvictionOutput(b, &out)
		return AppendEvictionOutput(nil, st, &out), err
	case "scheduling-input":
		var in SchedulingInput
		err := DecodeSchedulingInput(b, &in)
		return AppendSchedulingInput(nil, &in), err
	case "scheduling-output":
		var out SchedulingOutput
		st, err := DecodeSchedulingOutput(b, &out)
		return AppendSchedulingOutput(nil, st, &out), err
	case "batching-input":
		var in BatchingInput
		err := DecodeBatchingInput(b, &in)
		return AppendBatchingInput(nil, &in), err
	case "batching-output":
		var out BatchingOutput
		st, err := DecodeBatchingOutput(b, &out)
		return AppendBatchingOutput(nil, st, &out), err
	case "balancing-input":
		var in BalancingInput
		err := DecodeBalancingInput(b, &in)
		return AppendBalancingInput(nil, &in), err
	case "balancing-output":
		var out BalancingOutput
		st, err := DecodeBalancingOutput(b, &out)
		return AppendBalancingOutput(nil, st, &out), err
	case "routing-input":
		var in RoutingInput
		err := DecodeRoutingInput(b, &in)
		return AppendRoutingInput(nil, &in), err
	case "routing-output":
		var out RoutingOutput
		st, err := DecodeRoutingOutput(b, &out)
		return AppendRoutingOutput(nil, st, &out), err
	case "params":
		ps, err := DecodeParams(b)
		return AppendParams(nil, ps), err
	}
	panic("no decoder for golden case " + name)
}

// hexLines writes b as hex, 16 bytes a line, so that a diff of a golden
// file points at the record that moved.
func hexLines(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		n := min(16, len(b))
		sb.WriteString(hex.EncodeToString(b[:n]))
		sb.WriteByte('\n')
		b = b[n:]
	}
	return sb.String()
}
