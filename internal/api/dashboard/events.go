package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// A stream lives at most streamLife; the browser's EventSource then
// reconnects by itself (after the retry the stream announces). The bound
// keeps a forgotten tab from holding a connection, and its goroutine,
// forever; keepAlive comments keep proxies from closing a quiet stream.
const (
	streamLife = 10 * time.Minute
	keepAlive  = 15 * time.Second
)

// serveEvents is GET /v1/dashboard/events: job events as Server-Sent
// Events ("event: job", data the Event's JSON) from now on, until the
// client goes, kiln stops, or streamLife passes.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	ch := make(chan Event, 256)
	d.mu.Lock()
	d.subs[ch] = struct{}{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.subs, ch)
		d.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The server's write timeout is for ordinary answers; a stream sets
	// its own deadline before each write.
	write := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(keepAlive + 10*time.Second))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 2000\n: kiln dashboard events\n\n") {
		return
	}
	end := time.NewTimer(streamLife)
	defer end.Stop()
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		case <-end.C:
			return
		case <-ping.C:
			if !write(": keep-alive\n\n") {
				return
			}
		case e := <-ch:
			b, err := json.Marshal(e)
			if err != nil {
				continue
			}
			if !write("event: job\ndata: %s\n\n", b) {
				return
			}
		}
	}
}
