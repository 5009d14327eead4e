package dispatch

import "context"

// UnloadIdle unloads every model that no job has pinned from every worker
// and gives its VRAM back (ComfyUI's POST /free {"unload_models": true}).
// Models in use, or still loading, stay. It returns how many were unloaded.
func (d *Dispatcher) UnloadIdle(ctx context.Context) int {
	type victim struct{ worker, model string }
	var victims []victim
	d.mu.Lock()
	for wid, models := range d.resident {
		for m, rm := range models {
			if rm.pins == 0 && rm.loading == nil {
				victims = append(victims, victim{wid, m})
			}
		}
	}
	d.mu.Unlock()
	n := 0
	for _, v := range victims {
		w := d.opts.Pool.Get(v.worker)
		if w == nil {
			continue
		}
		d.evict(ctx, w, v.model) // re-checks the pin under the lock
		n++
	}
	if n > 0 {
		d.signalUnpin()
	}
	return n
}
