package job

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
)

// historySlack is how far past HistoryLimit the finished jobs may grow
// before a prune runs, so that pruning happens in batches (one commit for
// many deletions) rather than once per finished job.
func (c Config) historySlack() int { return max(c.HistoryLimit/10, 16) }

// finishedCount is the number of jobs in a terminal state. Callers hold s.mu.
func (s *Store) finishedCountLocked() int {
	return s.counts[Done] + s.counts[Failed] + s.counts[Cancelled]
}

// maybePrune starts a prune in the background when the finished jobs have
// grown past the history limit plus its slack. At most one prune runs.
func (s *Store) maybePrune() {
	if s.cfg.HistoryLimit <= 0 {
		return
	}
	s.mu.RLock()
	over := s.finishedCountLocked() - s.cfg.HistoryLimit
	s.mu.RUnlock()
	if over <= s.cfg.historySlack() || !s.pruning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.pruning.Store(false)
		_, _ = s.Prune(s.cfg.HistoryLimit)
	}()
}

// Prune deletes the oldest finished jobs (done, failed, cancelled; by
// submission order) until at most keep remain, and returns how many it
// deleted. Queued and running jobs are never touched. The store calls it by
// itself when queue.history_limit is set; an operator may call it too.
func (s *Store) Prune(keep int) (int, error) {
	if keep < 0 {
		return 0, fmt.Errorf("job: prune: keep must be ≥ 0, got %d", keep)
	}
	deleted := 0
	o := &op{}
	o.apply = func(w *writer) error {
		s.mu.RLock()
		excess := s.finishedCountLocked() - keep
		s.mu.RUnlock()
		if excess <= 0 {
			return nil
		}
		type victim struct {
			seq uint64
			id  string
			st  State
		}
		// The oldest finished jobs, from bbolt and from the changes it may
		// not have yet (which supersede its entries for the same jobs).
		var victims []victim
		c := w.seqs.Cursor()
		for k, v := c.First(); k != nil && len(victims) < excess; k, v = c.Next() {
			if len(k) != 8 || len(v) < 2 {
				continue
			}
			st, ok := stateOfCode(v[0])
			if !ok || !st.terminal() || w.pending(string(v[1:])) != nil {
				continue
			}
			victims = append(victims, victim{seq: binary.BigEndian.Uint64(k), id: string(v[1:]), st: st})
		}
		s.overlayMu.RLock()
		for id, r := range s.overlay {
			if r.del || w.changed[id] != nil {
				continue
			}
			if st, ok := stateOfCode(r.state); ok && st.terminal() {
				victims = append(victims, victim{seq: r.seq, id: id, st: st})
			}
		}
		s.overlayMu.RUnlock()
		for id, r := range w.changed {
			if st, ok := stateOfCode(r.state); ok && !r.del && st.terminal() {
				victims = append(victims, victim{seq: r.seq, id: id, st: st})
			}
		}
		slices.SortFunc(victims, func(a, b victim) int { return cmp.Compare(a.seq, b.seq) })
		victims = victims[:min(len(victims), excess)]
		for _, v := range victims {
			w.remove(v.id, v.seq)
		}
		deleted = len(victims)
		o.mem = func() {
			for _, v := range victims {
				s.counts[v.st]--
			}
		}
		return nil
	}
	if err := s.do(context.Background(), o); err != nil {
		return 0, err
	}
	return deleted, nil
}
