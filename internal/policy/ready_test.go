package policy

import (
	"context"
	"fmt"
	"sync"
	"testing"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Loads start background work (the pool's warm-up) at any time, while other
// goroutines may be waiting for the host to be ready. When readiness was a
// WaitGroup's Wait, an Add racing with it panicked ("WaitGroup misuse"),
// inside the HTTP handler of a policy upload: the client saw its connection
// closed. Seen once in CI, right after kiln started.
func TestLoadWhileOthersWaitForReady(t *testing.T) {
	h := newTestHost(t, Config{})
	wasm := wasmOf(t, "scheduling.fifo")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := h.WaitReady(context.Background()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 20 {
		if _, err := h.Load(context.Background(), abi.KindScheduling, fmt.Sprint("fifo-", i), wasm, false, "test"); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
