package policy

import (
	"slices"
	"time"
)

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
