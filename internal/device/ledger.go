package device

import (
	"fmt"
	"math"
	"sort"
	"sync"
)

// Ledger accounts for one device's VRAM. Loads reserve their bytes before
// they start and release them on unload; the headroom fraction of the device
// is never handed out. A Ledger is safe for concurrent use.
type Ledger struct {
	name     string
	total    uint64
	usable   uint64
	headroom float64

	mu     sync.Mutex
	used   uint64
	nextID uint64
	live   map[uint64]*Reservation
}

// Reservation is a claim on part of a ledger's usable memory, held from
// before a load starts until the model is unloaded.
type Reservation struct {
	ledger *Ledger
	id     uint64
	owner  string
	key    string

	// bytes and released are guarded by ledger.mu.
	bytes    uint64
	released bool
}

// ReservationInfo describes one live reservation.
type ReservationInfo struct {
	Owner string `json:"owner"`
	Key   string `json:"key"`
	Bytes uint64 `json:"bytes"`
}

// InsufficientVRAMError is the error of a reservation or growth that does
// not fit. It matches ErrInsufficientVRAM with errors.Is; use errors.As to
// read the figures.
type InsufficientVRAMError struct {
	Device   string  // device name; empty for an unnamed ledger
	Op       string  // "reserve" or "grow"
	Key      string  // what was being loaded
	Bytes    uint64  // bytes requested (for grow: the new size)
	Current  uint64  // for grow: the size before
	Free     uint64  // usable bytes not reserved
	Usable   uint64  // total less headroom
	Headroom float64 // fraction of total never handed out
}

// Error implements error, e.g. "device sim-gpu-0: reserve 7.0 GiB for
// checkpoints/x: only 3.2 GiB free of 19.2 GiB usable (20% headroom)".
func (e *InsufficientVRAMError) Error() string {
	prefix := ""
	if e.Device != "" {
		prefix = "device " + e.Device + ": "
	}
	var what string
	if e.Op == "grow" {
		what = fmt.Sprintf("grow %s from %s to %s", e.Key, FormatBytes(e.Current), FormatBytes(e.Bytes))
	} else {
		what = fmt.Sprintf("reserve %s for %s", FormatBytes(e.Bytes), e.Key)
	}
	return fmt.Sprintf("%s%s: only %s free of %s usable (%s%% headroom)",
		prefix, what, FormatBytes(e.Free), FormatBytes(e.Usable), formatPercent(e.Headroom))
}

// Is reports whether target is ErrInsufficientVRAM.
func (e *InsufficientVRAMError) Is(target error) bool { return target == ErrInsufficientVRAM }

// NewLedger returns a ledger for a device of total bytes that never hands out
// the headroom fraction of it (clamped to [0, 1]).
func NewLedger(total uint64, headroom float64) *Ledger {
	return newLedger("", total, headroom)
}

func newLedger(name string, total uint64, headroom float64) *Ledger {
	if !(headroom >= 0) { // NaN too
		headroom = 0
	}
	if headroom > 1 {
		headroom = 1
	}
	reserve := uint64(math.Ceil(float64(total) * headroom))
	if reserve > total {
		reserve = total
	}
	return &Ledger{
		name:     name,
		total:    total,
		usable:   total - reserve,
		headroom: headroom,
		live:     make(map[uint64]*Reservation),
	}
}

// Reserve claims bytes for key (a model, e.g. "checkpoints/sdxl.safetensors")
// on behalf of owner (e.g. a worker ID). It fails with an error wrapping
// ErrInsufficientVRAM when the bytes do not fit in the free usable memory.
func (l *Ledger) Reserve(owner, key string, bytes uint64) (*Reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if free := l.usable - l.used; bytes > free {
		return nil, &InsufficientVRAMError{
			Device: l.name, Op: "reserve", Key: key, Bytes: bytes,
			Free: free, Usable: l.usable, Headroom: l.headroom,
		}
	}
	l.nextID++
	r := &Reservation{ledger: l, id: l.nextID, owner: owner, key: key, bytes: bytes}
	l.live[r.id] = r
	l.used += bytes
	return r, nil
}

// Release returns r's bytes to the ledger. Releasing twice, releasing nil
// and releasing a reservation of another ledger do nothing.
func (l *Ledger) Release(r *Reservation) {
	if r == nil || r.ledger != l {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.released {
		return
	}
	r.released = true
	l.used -= r.bytes
	delete(l.live, r.id)
}

// Resize changes r to newBytes, typically when the worker reports the true
// footprint after a load. Shrinking always succeeds; growing fails with an
// error wrapping ErrInsufficientVRAM when the growth does not fit, and r is
// then unchanged. Resizing a released reservation fails with ErrReleased.
func (l *Ledger) Resize(r *Reservation, newBytes uint64) error {
	if r == nil || r.ledger != l {
		return fmt.Errorf("resize: reservation does not belong to this ledger")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.released {
		return fmt.Errorf("resize %s: %w", r.key, ErrReleased)
	}
	if newBytes > r.bytes {
		if grow, free := newBytes-r.bytes, l.usable-l.used; grow > free {
			return &InsufficientVRAMError{
				Device: l.name, Op: "grow", Key: r.key, Bytes: newBytes, Current: r.bytes,
				Free: free, Usable: l.usable, Headroom: l.headroom,
			}
		}
	}
	l.used = l.used - r.bytes + newBytes
	r.bytes = newBytes
	return nil
}

// Used returns the reserved bytes.
func (l *Ledger) Used() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.used
}

// Free returns the usable bytes not reserved.
func (l *Ledger) Free() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.usable - l.used
}

// Usable returns the total less the headroom.
func (l *Ledger) Usable() uint64 { return l.usable }

// Total returns the device's total memory.
func (l *Ledger) Total() uint64 { return l.total }

// Headroom returns the fraction of the total that is never handed out.
func (l *Ledger) Headroom() float64 { return l.headroom }

// Snapshot lists the live reservations in the order they were made.
func (l *Ledger) Snapshot() []ReservationInfo {
	l.mu.Lock()
	rs := make([]*Reservation, 0, len(l.live))
	for _, r := range l.live {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].id < rs[j].id })
	out := make([]ReservationInfo, len(rs))
	for i, r := range rs {
		out[i] = ReservationInfo{Owner: r.owner, Key: r.key, Bytes: r.bytes}
	}
	l.mu.Unlock()
	return out
}

// Owner returns who holds the reservation.
func (r *Reservation) Owner() string { return r.owner }

// Key returns what the reservation is for.
func (r *Reservation) Key() string { return r.key }

// Bytes returns the reservation's current size.
func (r *Reservation) Bytes() uint64 {
	r.ledger.mu.Lock()
	defer r.ledger.mu.Unlock()
	return r.bytes
}

// Release is r's ledger's Release(r).
func (r *Reservation) Release() {
	if r != nil {
		r.ledger.Release(r)
	}
}

// Resize is r's ledger's Resize(r, newBytes).
func (r *Reservation) Resize(newBytes uint64) error { return r.ledger.Resize(r, newBytes) }

// FormatBytes renders n in binary units with one decimal: "7.0 GiB",
// "512.0 MiB", "12 B".
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func formatPercent(f float64) string {
	return fmt.Sprintf("%.4g", f*100)
}
