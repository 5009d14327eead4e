package experiment

import (
	"fmt"
	"testing"
)

// devicesOf builds nDev devices of perDev workers each, named as the node
// names them (w<device>.<worker>).
func devicesOf(nDev, perDev int) [][]string {
	out := make([][]string, nDev)
	for d := range nDev {
		for w := range perDev {
			out[d] = append(out[d], fmt.Sprintf("w%d.%d", d, w))
		}
	}
	return out
}

// TestSplitDevicesKeepsDevicesWhole checks the properties a worker-group
// split needs on a node with several workers per device: no device is
// shared by two arms (its VRAM and compute would carry one arm's harm into
// the other), the candidate gets at least its step's share, the baseline
// about as much and never nothing below 100%, and the same seed gives the
// same split.
func TestSplitDevicesKeepsDevicesWhole(t *testing.T) {
	for _, shape := range [][2]int{{4, 2}, {8, 2}, {2, 4}, {3, 3}, {6, 1}} {
		devs := devicesOf(shape[0], shape[1])
		n := shape[0] * shape[1]
		for _, pct := range []int{5, 25, 50, 100} {
			for seed := uint64(1); seed <= 20; seed++ {
				k := groupSize(n, pct)
				g := splitDevices(devs, k, seed)
				name := fmt.Sprintf("%d devices × %d workers, %d%%, seed %d", shape[0], shape[1], pct, seed)
				var count [3]int
				for _, d := range devs {
					arm := g[d[0]]
					for _, w := range d {
						if g[w] != arm {
							t.Fatalf("%s: device %v split between arms: %v", name, d, g)
						}
					}
					count[arm] += len(d)
				}
				if len(g) != n {
					t.Fatalf("%s: %d workers assigned, want %d", name, len(g), n)
				}
				if pct == 100 {
					if count[Candidate] != n {
						t.Errorf("%s: candidate has %d workers at 100%%, want all %d", name, count[Candidate], n)
					}
					continue
				}
				if count[Baseline] == 0 || count[Candidate] == 0 {
					t.Errorf("%s: arms %v, want workers in both", name, count)
				}
				// At least the step's share, short only of the device the
				// baseline keeps.
				if want := min(k, n-shape[1]); count[Candidate] < want {
					t.Errorf("%s: candidate has %d workers, want at least %d", name, count[Candidate], want)
				}
				if count[Baseline] > count[Candidate] {
					t.Errorf("%s: baseline %d workers > candidate %d: the comparison should be about even", name, count[Baseline], count[Candidate])
				}
				again := splitDevices(devs, k, seed)
				if fmt.Sprint(again) != fmt.Sprint(g) {
					t.Errorf("%s: a second split with the same seed differs", name)
				}
			}
		}
	}
}

// TestSplitDevicesSingleWorkerGroups checks that with one worker per
// device the split is the plain worker split: k workers to the candidate,
// min(k, n−k) to the baseline, the rest to production; and that seeds move
// which workers those are.
func TestSplitDevicesSingleWorkerGroups(t *testing.T) {
	devs := devicesOf(8, 1)
	seen := map[string]bool{}
	for seed := uint64(1); seed <= 30; seed++ {
		for _, pct := range []int{5, 25, 50} {
			k := groupSize(8, pct)
			g := splitDevices(devs, k, seed)
			var count [3]int
			for _, arm := range g {
				count[arm]++
			}
			if count[Candidate] != k || count[Baseline] != min(k, 8-k) {
				t.Errorf("%d%% seed %d: arms %v, want candidate %d and baseline %d", pct, seed, count, k, min(k, 8-k))
			}
			if pct == 25 {
				seen[fmt.Sprint(g)] = true
			}
		}
	}
	if len(seen) < 5 {
		t.Errorf("30 seeds gave %d distinct 25%% splits: the shuffle does not depend on the seed", len(seen))
	}
}

// TestSplitDevicesOneDevice checks the fallback: one device with several
// workers cannot be split by device, so its workers are split one by one
// rather than giving the baseline nothing.
func TestSplitDevicesOneDevice(t *testing.T) {
	devs := devicesOf(1, 4)
	g := splitDevices(devs, groupSize(4, 50), 7)
	var count [3]int
	for _, arm := range g {
		count[arm]++
	}
	if count[Candidate] != 2 || count[Baseline] != 2 {
		t.Errorf("one device of 4 workers at 50%%: arms %v, want 2 and 2", count)
	}
}
