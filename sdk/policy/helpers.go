package policy

import (
	"slices"
	"time"
)

// TakeVictims appends the entries of order (indices into in.Entries, the
// policy's eviction order) to out.Victims until Need bytes are free,
// counting Free. When even all of order is not enough it leaves no victims
// and reports false: the policy then answers StatusNoDecision.
func TakeVictims(in *EvictionInput, out *EvictionOutput, order []uint32) bool {
	free, start := in.Free, len(out.Victims)
	for _, i := range order {
		if free >= in.Need {
			break
		}
		out.Victims = append(out.Victims, i)
		free += in.Entries[i].Bytes
	}
	if free < in.Need {
		out.Victims = out.Victims[:start]
		return false
	}
	return true
}

// FillPrefetch adds to out.Prefetch the wanted models that fit in the room
// left once out.Victims are gone and Need is served, most-waited-for first
// (then the costlier load first). Eviction policies call it when their
// prefetch parameter is on.
func FillPrefetch(in *EvictionInput, out *EvictionOutput) {
	if len(in.Wanted) == 0 {
		return
	}
	room := in.Free
	for _, v := range out.Victims {
		room += in.Entries[v].Bytes
	}
	if room <= in.Need {
		return
	}
	room -= in.Need
	idx := make([]uint32, len(in.Wanted))
	for i := range idx {
		idx[i] = uint32(i)
	}
	slices.SortStableFunc(idx, func(a, b uint32) int {
		x, y := in.Wanted[a], in.Wanted[b]
		if x.Waiting != y.Waiting {
			return int(y.Waiting) - int(x.Waiting)
		}
		return cmpDur(y.LoadCost, x.LoadCost)
	})
	for _, i := range idx {
		if w := in.Wanted[i]; w.Waiting > 0 && w.Bytes <= room {
			out.Prefetch = append(out.Prefetch, i)
			room -= w.Bytes
		}
	}
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LoadTime estimates the time to load model m onto w: its measured load
// cost when the input has one, else its bytes at the worker's bandwidth,
// else at DefaultH2D. It is 0 when the model is resident on w.
func LoadTime(models []ModelInfo, m uint32, w *Worker) time.Duration {
	if slices.Contains(w.Resident, m) {
		return 0
	}
	mi := models[m]
	if mi.LoadCost > 0 {
		return mi.LoadCost
	}
	bw := w.H2DBytesPerS
	if bw == 0 {
		bw = DefaultH2D
	}
	return time.Duration(float64(mi.Bytes) / float64(bw) * float64(time.Second))
}

// DefaultH2D is the host-to-device bandwidth LoadTime assumes when the input
// has no measurement: PCIe 4.0 x16 pinned, the figure in shared/COSTS.md.
const DefaultH2D = 25_130_000_000

// Fits reports whether job j's models can ever fit on w's device.
func Fits(j *Job, w *Worker) bool { return w.UsableVRAM == 0 || j.VRAM <= w.UsableVRAM }

// NodeLoadTime estimates the time to make model m resident on a GPU of
// node n, from the fastest tier of n that holds it: 0 in VRAM; from RAM,
// its bytes at the node's host-to-device rate; from disk, a disk read
// first; from nowhere, a read from the model source first. A rate the node
// does not know is taken as DefaultH2D, DefaultDiskBytesPerS or
// DefaultRemoteBytesPerS. The model's own LoadCost is not used: it prices
// a load on the node that sent it, not on n.
func NodeLoadTime(models []ModelInfo, m uint32, n *Node) time.Duration {
	if slices.Contains(n.VRAM, m) {
		return 0
	}
	b := float64(models[m].Bytes)
	rate := func(r, def uint64) float64 {
		if r == 0 {
			r = def
		}
		return float64(r)
	}
	secs := b / rate(n.H2DBytesPerS, DefaultH2D)
	if !slices.Contains(n.RAM, m) {
		secs += b / rate(n.DiskBytesPerS, DefaultDiskBytesPerS)
		if !slices.Contains(n.Disk, m) {
			secs += b / rate(n.RemoteBytesPerS, DefaultRemoteBytesPerS)
		}
	}
	return time.Duration(secs * float64(time.Second))
}

// DefaultDiskBytesPerS and DefaultRemoteBytesPerS are the rates
// NodeLoadTime assumes when a node has not measured its own: an NVMe read
// and a 10 Gbit/s model source (the simulator's defaults).
const (
	DefaultDiskBytesPerS   = 3_000_000_000
	DefaultRemoteBytesPerS = 1_250_000_000
)

// FitsNode reports whether job j can run on node n at all: n is healthy
// and its largest device can hold the job's models (or n does not say).
func FitsNode(j *Job, n *Node) bool {
	return n.Healthy && (n.UsableVRAM == 0 || j.VRAM <= n.UsableVRAM)
}
