package policy

import (
	"sync"
	"sync/atomic"
	"time"
)

// watchdog enforces every WASM call's deadline with one goroutine for the
// whole host, so that a call pays two atomic operations for it and nothing
// else: no context, no timer, no goroutine.
//
// Time is counted in epochs, one per tick. A call records the epoch it
// started in; each tick, the watchdog stops the calls that started more
// than their limit ago by setting their instance's kiln.deadline global,
// which the instrumented code checks at every loop head (see instrument).
// A call is stopped between limit and limit + 1 tick after it began. The
// tick is real time on purpose, also under the simulator's virtual clock:
// what it bounds is CPU spent in a guest.
type watchdog struct {
	tick  time.Duration
	epoch atomic.Uint64

	mu    sync.Mutex
	insts map[*instance]struct{}

	stop chan struct{}
	done chan struct{}
}

// killed marks an instance whose call the watchdog stopped.
const killed = ^uint64(0)

func newWatchdog(tick time.Duration) *watchdog {
	w := &watchdog{tick: max(tick, time.Millisecond), insts: map[*instance]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *watchdog) run() {
	defer close(w.done)
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.check(w.epoch.Add(1))
		}
	}
}

// check stops the calls that have run out of time by epoch now. The slot
// of a call holds its start epoch + 1 and its length in epochs (high 16
// bits), so that one word says both when and how long.
func (w *watchdog) check(now uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for in := range w.insts {
		s := in.started.Load()
		if s == 0 || s == killed {
			continue
		}
		began, limit := s&(1<<48-1)-1, s>>48
		if now-began > limit && in.started.CompareAndSwap(s, killed) {
			in.deadline.Set(1)
		}
	}
}

// start marks the beginning of a call on in that may run for limit, and
// returns the word that the caller must swap back to 0 when the call
// returns; the swap fails when the watchdog stopped the call.
func (w *watchdog) start(in *instance, limit time.Duration) uint64 {
	epochs := uint64((limit + w.tick - 1) / w.tick)
	s := min(epochs, 1<<16-1)<<48 | (w.epoch.Load() + 1)
	in.started.Store(s)
	return s
}

func (w *watchdog) add(in *instance) {
	w.mu.Lock()
	w.insts[in] = struct{}{}
	w.mu.Unlock()
}

func (w *watchdog) remove(in *instance) {
	w.mu.Lock()
	delete(w.insts, in)
	w.mu.Unlock()
}

func (w *watchdog) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
		<-w.done
	}
}
