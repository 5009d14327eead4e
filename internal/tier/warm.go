package tier

import (
	"context"
	"sort"
)

// WarmEntry is one RAM-tier (L2) entry as a warming decision sees it.
type WarmEntry struct {
	// Model is the model id the entry was promoted for.
	Model  string
	Bytes  int64
	Pinned bool
}

// RAMEntries lists the RAM tier's entries, by model id.
func (m *Manager) RAMEntries() []WarmEntry {
	m.ram.mu.Lock()
	out := make([]WarmEntry, 0, len(m.ram.entries))
	for _, e := range m.ram.entries {
		out = append(out, WarmEntry{Model: e.model, Bytes: e.size, Pinned: e.pins > 0})
	}
	m.ram.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Model < out[j].Model })
	return out
}

// Warm brings model id into the RAM tier without pinning it, as a predictor
// decided (internal/predict): first it drops the RAM entries of the models in
// evict that nothing pins, then promotes id. While it runs, the RAM and
// disk entries of the models in protect (those queued jobs need) are
// pinned, so that the tiers' own eviction, which makes room for id if the
// dropped entries were not enough, cannot take them: a warm never costs a
// queued job its model. The pins are released before Warm returns.
func (m *Manager) Warm(ctx context.Context, id string, evict, protect []string) error {
	var ramPins, diskPins []*entry
	defer func() {
		for _, e := range ramPins {
			m.ram.unpin(e)
		}
		for _, e := range diskPins {
			m.disk.unpin(e)
		}
	}()
	for _, p := range protect {
		sum := m.Learned(p)
		if sum == "" {
			continue
		}
		if e := m.ram.get(sum, false); e != nil {
			ramPins = append(ramPins, e)
		}
		if e := m.disk.get(sum, false); e != nil {
			diskPins = append(diskPins, e)
		}
	}
	for _, v := range evict {
		if sum := m.Learned(v); sum != "" {
			m.ram.evictUnpinned(sum)
		}
	}
	l, err := m.Acquire(ctx, id)
	if err != nil {
		return err
	}
	l.Release()
	return nil
}

// evictUnpinned drops the entry for sum unless something pins it.
func (s *store) evictUnpinned(sum string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[sum]; e != nil && e.pins == 0 {
		s.dropLocked(sum, true)
	}
}
