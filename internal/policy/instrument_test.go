package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// spinModule is (module (memory 1) (export "memory" (memory 0))
// (func $spin (loop br 0)) (export "spin" (func $spin)) (start?)).
func spinModule(withStart bool) []byte {
	b := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
		0x03, 0x02, 0x01, 0x00, // function 0: type 0
		0x05, 0x03, 0x01, 0x00, 0x01, // memory: min 1
		0x07, 0x11, 0x02, 0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x00, 0x04, 's', 'p', 'i', 'n', 0x00, 0x00,
	}
	if withStart {
		b = append(b, 0x08, 0x01, 0x00) // start: function 0
	}
	return append(b, 0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b) // loop br 0 end end
}

// TestInstrumentStopsALoop runs an endless loop in an instrumented module
// and stops it by setting its deadline global from another goroutine, as
// the watchdog does; the uninstrumented loop would never return.
func TestInstrumentStopsALoop(t *testing.T) {
	ctx := context.Background()
	code, err := instrument(spinModule(false))
	if err != nil {
		t.Fatal(err)
	}
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.Instantiate(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	dl, ok := mod.ExportedGlobal(deadlineExport).(api.MutableGlobal)
	if !ok {
		t.Fatalf("no mutable %s export", deadlineExport)
	}
	done := make(chan error, 1)
	go func() { _, err := mod.ExportedFunction("spin").Call(ctx); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("spin returned before its deadline: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	dl.Set(1)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("spin ended with %v, want an unreachable trap", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("spin still runs 10 s after its deadline was set")
	}
}

// TestInstrumentStartSection checks that a start section becomes the
// kiln.start export, so that the host runs it under the watchdog instead
// of inside instantiation, where nothing could stop it.
func TestInstrumentStartSection(t *testing.T) {
	ctx := context.Background()
	code, err := instrument(spinModule(true))
	if err != nil {
		t.Fatal(err)
	}
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	cm, err := rt.CompileModule(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cm.ExportedFunctions()[startExport]; !ok {
		t.Fatalf("no %s export; exports %v", startExport, cm.ExportedFunctions())
	}
	// Instantiating returns at once: the endless start function did not run.
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := rt.InstantiateModule(ictx, cm, wazero.NewModuleConfig()); err != nil {
		t.Fatal(err)
	}
}

func TestInstrumentRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"not wasm":       []byte("hello, world"),
		"truncated":      spinModule(false)[:30],
		"unknown opcode": append(spinModule(false)[:len(spinModule(false))-11], 0x0a, 0x05, 0x01, 0x03, 0x00, 0xff, 0x0b),
	} {
		if _, err := instrument(b); err == nil {
			t.Errorf("%s: instrumented without an error", name)
		}
	}
}

// FuzzInstrument feeds arbitrary bytes to the instrumenter, which reads
// modules from outside: it must return an error or a module, never panic,
// and what it returns must instrument again.
func FuzzInstrument(f *testing.F) {
	f.Add(spinModule(false))
	f.Add(spinModule(true))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := instrument(b)
		if err != nil {
			return
		}
		if _, err := instrument(out); err != nil {
			t.Fatalf("instrumented output does not instrument again: %v", err)
		}
	})
}
