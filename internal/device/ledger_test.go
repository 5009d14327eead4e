package device

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

const gib = 1 << 30

func TestLedgerReserve(t *testing.T) {
	// 10 GiB with 20% headroom: 8 GiB usable.
	for _, tc := range []struct {
		name     string
		existing []uint64
		bytes    uint64
		wantErr  bool
	}{
		{name: "empty fits", bytes: 1 * gib},
		{name: "exact fit", bytes: 8 * gib},
		{name: "one byte over", bytes: 8*gib + 1, wantErr: true},
		{name: "exact fit after others", existing: []uint64{3 * gib, 2 * gib}, bytes: 3 * gib},
		{name: "over after others", existing: []uint64{3 * gib, 2 * gib}, bytes: 3*gib + 1, wantErr: true},
		{name: "zero bytes when full", existing: []uint64{8 * gib}, bytes: 0},
		{name: "headroom is never handed out", existing: []uint64{8 * gib}, bytes: 1, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLedger(10*gib, 0.2)
			var want uint64
			for i, b := range tc.existing {
				if _, err := l.Reserve("w", fmt.Sprint("m", i), b); err != nil {
					t.Fatalf("existing reserve: %v", err)
				}
				want += b
			}
			r, err := l.Reserve("w0.0", "checkpoints/x", tc.bytes)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Reserve(%d) err = %v; wantErr %v", tc.bytes, err, tc.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrInsufficientVRAM) {
					t.Errorf("err %v does not wrap ErrInsufficientVRAM", err)
				}
				if r != nil {
					t.Errorf("got a reservation with an error")
				}
			} else {
				want += tc.bytes
			}
			if l.Used() != want || l.Free() != l.Usable()-want {
				t.Errorf("Used, Free = %d, %d; want %d, %d", l.Used(), l.Free(), want, l.Usable()-want)
			}
		})
	}
}

func TestLedgerErrorMessage(t *testing.T) {
	l := newLedger("sim-gpu-0", 24*gib, 0.2) // 19.2 GiB usable
	if _, err := l.Reserve("w0.0", "checkpoints/a", 16*gib); err != nil {
		t.Fatal(err)
	}
	_, err := l.Reserve("w0.1", "checkpoints/x", 7*gib)
	want := "device sim-gpu-0: reserve 7.0 GiB for checkpoints/x: only 3.2 GiB free of 19.2 GiB usable (20% headroom)"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v; want %q", err, want)
	}
	var ie *InsufficientVRAMError
	if !errors.As(err, &ie) || ie.Bytes != 7*gib || ie.Usable != l.Usable() {
		t.Errorf("errors.As = %+v", ie)
	}
}

func TestLedgerReleaseAndResize(t *testing.T) {
	l := NewLedger(10*gib, 0.2)
	a, err := l.Reserve("w0.0", "a", 4*gib)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Reserve("w0.1", "b", 2*gib)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		do       func() error
		wantErr  error
		wantUsed uint64
	}{
		{name: "shrink", do: func() error { return a.Resize(3 * gib) }, wantUsed: 5 * gib},
		{name: "grow to exact fit", do: func() error { return a.Resize(6 * gib) }, wantUsed: 8 * gib},
		{name: "grow over", do: func() error { return b.Resize(2*gib + 1) }, wantErr: ErrInsufficientVRAM, wantUsed: 8 * gib},
		{name: "release", do: func() error { l.Release(a); return nil }, wantUsed: 2 * gib},
		{name: "release twice", do: func() error { a.Release(); return nil }, wantUsed: 2 * gib},
		{name: "resize released", do: func() error { return a.Resize(1) }, wantErr: ErrReleased, wantUsed: 2 * gib},
		{name: "release nil", do: func() error { l.Release(nil); return nil }, wantUsed: 2 * gib},
		{name: "release foreign", do: func() error {
			o, _ := NewLedger(gib, 0).Reserve("x", "y", 1)
			l.Release(o)
			return nil
		}, wantUsed: 2 * gib},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			err := st.do()
			if !errors.Is(err, st.wantErr) || (err != nil) != (st.wantErr != nil) {
				t.Errorf("err = %v; want %v", err, st.wantErr)
			}
			if got := l.Used(); got != st.wantUsed {
				t.Errorf("Used() = %d; want %d", got, st.wantUsed)
			}
		})
	}
	snap := l.Snapshot()
	if len(snap) != 1 || snap[0] != (ReservationInfo{Owner: "w0.1", Key: "b", Bytes: 2 * gib}) {
		t.Errorf("Snapshot() = %+v", snap)
	}
	if b.Bytes() != 2*gib || b.Owner() != "w0.1" || b.Key() != "b" {
		t.Errorf("reservation = %s %s %d", b.Owner(), b.Key(), b.Bytes())
	}
}

func TestLedgerSizes(t *testing.T) {
	for _, tc := range []struct {
		total      uint64
		headroom   float64
		wantUsable uint64
	}{
		{total: 100, headroom: 0, wantUsable: 100},
		{total: 100, headroom: 0.2, wantUsable: 80},
		{total: 101, headroom: 0.5, wantUsable: 50}, // headroom rounds up
		{total: 100, headroom: 1, wantUsable: 0},
		{total: 100, headroom: -1, wantUsable: 100},
		{total: 0, headroom: 0.2, wantUsable: 0},
	} {
		t.Run(fmt.Sprint(tc.total, "/", tc.headroom), func(t *testing.T) {
			l := NewLedger(tc.total, tc.headroom)
			if l.Usable() != tc.wantUsable || l.Total() != tc.total || l.Free() != tc.wantUsable {
				t.Errorf("Usable, Total, Free = %d, %d, %d; want %d", l.Usable(), l.Total(), l.Free(), tc.wantUsable)
			}
		})
	}
}

func TestLedgerConcurrent(t *testing.T) {
	l := NewLedger(100*gib, 0.2) // 80 GiB usable
	const goroutines, rounds = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				r, err := l.Reserve(fmt.Sprint("w", g), fmt.Sprint("m", i), 15*gib)
				if err != nil {
					if !errors.Is(err, ErrInsufficientVRAM) {
						t.Errorf("Reserve: %v", err)
					}
					continue
				}
				if u := l.Used(); u > l.Usable() {
					t.Errorf("Used %d > Usable %d", u, l.Usable())
				}
				_ = r.Resize(10 * gib)
				_ = l.Snapshot()
				r.Release()
				r.Release()
			}
		}()
	}
	wg.Wait()
	if l.Used() != 0 || len(l.Snapshot()) != 0 {
		t.Errorf("after all releases: Used %d, %d reservations", l.Used(), len(l.Snapshot()))
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {7 * gib, "7.0 GiB"},
		{512 << 20, "512.0 MiB"}, {1 << 40, "1.0 TiB"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := FormatBytes(tc.in); got != tc.want {
				t.Errorf("FormatBytes(%d) = %q; want %q", tc.in, got, tc.want)
			}
		})
	}
}
