package dispatch

import (
	"sync"

	"github.com/kiln-gpu/kiln/internal/job"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// bus fans events out to subscribers.
type bus struct {
	mu   sync.Mutex
	subs map[int]chan job.Event
	next int
}

// Subscribe returns a channel of every job event from now on and a function
// that ends the subscription. buf is the channel's capacity; events that do
// not fit are dropped for that subscriber.
func (d *Dispatcher) Subscribe(buf int) (<-chan job.Event, func()) {
	b := &d.events
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = map[int]chan job.Event{}
	}
	id := b.next
	b.next++
	ch := make(chan job.Event, buf)
	b.subs[id] = ch
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if c, ok := b.subs[id]; ok {
			delete(b.subs, id)
			close(c)
		}
	}
}

func (d *Dispatcher) publish(e job.Event) {
	b := &d.events
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// withPreview adds p's preview to e, if it has one the kernel forwards: of a
// known format and at most wire.MaxPreviewBytes. Others are dropped here, so
// that an oversized preview costs no subscriber anything; the progress
// itself is kept.
func withPreview(e job.Event, p wire.Progress) job.Event {
	if len(p.Preview) == 0 || len(p.Preview) > wire.MaxPreviewBytes {
		return e
	}
	switch p.PreviewFormat {
	case wire.PreviewPNG, wire.PreviewJPEG:
		e.Preview, e.PreviewFormat = p.Preview, p.PreviewFormat
	}
	return e
}
