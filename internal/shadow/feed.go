package shadow

import (
	"context"

	"github.com/kiln-gpu/kiln/internal/job"
)

// Resolver turns a dispatcher event into an access: the device the job's
// worker (Event.Worker) drives and the job's models. ok is false for events that are not
// accesses or cannot be placed.
type Resolver func(job.Event) (device int, models []string, ok bool)

// Feed replays the EventStarted events of ch until ctx ends or ch closes.
// Run it on its own goroutine: the dispatcher's bus drops events for a slow
// subscriber, so the shadow can never hold a job back.
func (s *Shadow) Feed(ctx context.Context, ch <-chan job.Event, resolve Resolver) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-ch:
			if !ok {
				return
			}
			if e.Type != job.EventStarted {
				continue
			}
			dev, models, ok := resolve(e)
			if !ok {
				s.Dropped(1)
				continue
			}
			s.AccessOn(dev, e.Worker, models)
		}
	}
}
