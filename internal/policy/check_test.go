package policy

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestRandomSamplesCatchASneakyModule: a module that answers the fixed
// self-test inputs well and misbehaves elsewhere passes the fixed samples
// and is refused by the random ones, at load and in Check, with the seed
// that replays the failure.
func TestRandomSamplesCatchASneakyModule(t *testing.T) {
	wasm := wasmOf(t, "sneaky")
	h := newTestHost(t, Config{})
	_, err := h.Load(context.Background(), abi.KindEviction, "sneaky", wasm, true, "test")
	if err == nil || !strings.Contains(err.Error(), "random sample") || !strings.Contains(err.Error(), "--seed") {
		t.Fatalf("load of the sneaky module: %v; want a random-sample failure naming its seed", err)
	}
	// The fixed samples pass it ("sample entries", "sample empty" would
	// name them): the random ones are what refused it.
	h2 := newTestHost(t, Config{})
	h2.sampleSeed = func() uint64 { return 1 }
	_, err = h2.Load(context.Background(), abi.KindEviction, "sneaky", wasm, true, "test")
	if err == nil || strings.Contains(err.Error(), "sample entries") || strings.Contains(err.Error(), "sample empty") {
		t.Errorf("load with seed 1: %v; want the fixed samples passed and a random one failed", err)
	}
	_, err = Check(context.Background(), abi.KindEviction, wasm, CheckOptions{Seed: 5, CacheDir: testCacheDir, CallTimeout: time.Second}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "seed 5") {
		t.Errorf("Check(sneaky) = %v; want a failure naming seed 5", err)
	}
}

// TestCheckBuiltins runs every built-in's WASM build through Check: they
// pass, and the trace asks them every kind of input (answers and no
// decisions).
func TestCheckBuiltins(t *testing.T) {
	for _, k := range abi.Kinds {
		for _, name := range BuiltinNames(k) {
			t.Run(k.String()+"."+name, func(t *testing.T) {
				rep, err := Check(context.Background(), k, wasmOf(t, k.String()+"."+name),
					CheckOptions{Seed: 7, Samples: 300, CacheDir: testCacheDir, CallTimeout: 5 * time.Second}, zerolog.Nop())
				if err != nil {
					t.Fatal(err)
				}
				if rep.Trace.Decisions != 300 || rep.Trace.OK == 0 {
					t.Errorf("trace %+v; want 300 decisions, some answered", rep.Trace)
				}
			})
		}
	}
}

// TestSampleInputsReplay: a seed gives the same inputs every time, and
// inputs valid for the host's own encoder and decoder.
func TestSampleInputsReplay(t *testing.T) {
	for _, k := range abi.Kinds {
		for i := range 20 {
			a, b := SampleInput(k, 99, i), SampleInput(k, 99, i)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s sample %d differs between two draws of one seed", k, i)
			}
		}
		if reflect.DeepEqual(SampleInput(k, 1, 3), SampleInput(k, 2, 3)) {
			t.Errorf("%s: seeds 1 and 2 drew the same input", k)
		}
	}
}
