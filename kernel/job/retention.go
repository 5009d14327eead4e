package job

import (
	"context"
	"fmt"
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
			seq []byte
			id  []byte
			st  State
		}
		var victims []victim
		c := w.seqs.Cursor()
		for k, v := c.First(); k != nil && len(victims) < excess; k, v = c.Next() {
			if len(v) < 2 {
				continue
			}
			st, ok := stateOfCode(v[0])
			if !ok || !st.terminal() {
				continue
			}
			victims = append(victims, victim{seq: append([]byte(nil), k...), id: append([]byte(nil), v[1:]...), st: st})
		}
		for _, v := range victims {
			if err := w.jobs.Delete(v.id); err != nil {
				w.fatal = fmt.Errorf("job: prune %s: %w", v.id, err)
				return w.fatal
			}
			if err := w.seqs.Delete(v.seq); err != nil {
				w.fatal = fmt.Errorf("job: prune seq of %s: %w", v.id, err)
				return w.fatal
			}
		}
		w.wrote += len(victims)
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
