package cluster

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// wsSubject carries the ComfyUI WebSocket messages of prompts between
// nodes: a prompt runs on one node, its client may be connected to another.
// Core NATS, not JetStream: progress is worth nothing once late, so it is
// sent at most once and never stored.
const wsSubject = "kiln.ws"

// Headers of a forwarded WebSocket message.
const (
	wsNodeHeader   = "Kiln-Node"
	wsClientHeader = "Kiln-Client"
	wsKindHeader   = "Kiln-Kind"
	// A message larger than the server's max payload (1 MiB by default; a
	// SaveImageWebsocket PNG is often more) goes in parts: the message's
	// id, the part's index and the number of parts.
	wsMessageHeader = "Kiln-Message"
	wsPartHeader    = "Kiln-Part"
	wsPartsHeader   = "Kiln-Parts"
)

// wsPartSlack is room left in each part for the headers.
const wsPartSlack = 4 << 10

// wsPartsKept bounds the messages a node reassembles at once, and
// wsPartsMaxAge how long it waits for a message's missing parts: core NATS
// may drop a part (a slow subscriber), and then the message is lost, as a
// slow client's messages are.
const (
	wsPartsKept   = 64
	wsPartsMaxAge = 30 * time.Second
)

// wsMessageSeq numbers the messages this process sends in parts.
var wsMessageSeq atomic.Uint64

// ForwardWS sends a WebSocket message for the client clientID to the other
// nodes, whose API delivers it to that client if it is connected there;
// kind is the API's own label of what frame holds (text, an image event).
// It does not wait: a message that NATS cannot take now is lost, as a slow
// client's messages are.
func (c *Cluster) ForwardWS(clientID, kind string, frame []byte) {
	part := int(c.nc.MaxPayload()) - wsPartSlack
	if part <= 0 || len(frame) <= part {
		_ = c.nc.PublishMsg(c.wsMsg(clientID, kind, frame))
		return
	}
	id := c.cfg.NodeID + "." + strconv.FormatUint(wsMessageSeq.Add(1), 10)
	parts := (len(frame) + part - 1) / part
	for i := range parts {
		m := c.wsMsg(clientID, kind, frame[i*part:min(len(frame), (i+1)*part)])
		m.Header.Set(wsMessageHeader, id)
		m.Header.Set(wsPartHeader, strconv.Itoa(i))
		m.Header.Set(wsPartsHeader, strconv.Itoa(parts))
		if c.nc.PublishMsg(m) != nil {
			return // the rest could not complete the message
		}
	}
}

func (c *Cluster) wsMsg(clientID, kind string, data []byte) *nats.Msg {
	m := nats.NewMsg(wsSubject)
	m.Header.Set(wsNodeHeader, c.cfg.NodeID)
	m.Header.Set(wsClientHeader, clientID)
	m.Header.Set(wsKindHeader, kind)
	m.Data = data
	return m
}

// OnForwardedWS has deliver called with every WebSocket message another
// node forwards (ForwardWS), reassembled, until the cluster is closed.
func (c *Cluster) OnForwardedWS(deliver func(clientID, kind string, frame []byte)) error {
	var parts wsParts
	_, err := c.nc.Subscribe(wsSubject, func(m *nats.Msg) {
		if m.Header.Get(wsNodeHeader) == c.cfg.NodeID {
			return // this node's own, delivered here already
		}
		id := m.Header.Get(wsClientHeader)
		if id == "" {
			return
		}
		frame := m.Data
		if msg := m.Header.Get(wsMessageHeader); msg != "" {
			if frame = parts.add(msg, m.Header.Get(wsPartHeader), m.Header.Get(wsPartsHeader), m.Data, time.Now()); frame == nil {
				return
			}
		}
		deliver(id, m.Header.Get(wsKindHeader), frame)
	})
	return err
}

// wsParts reassembles messages sent in parts. NATS delivers one
// subscription's messages in order, from one publisher in the order sent.
type wsParts struct {
	mu      sync.Mutex
	pending map[string]*wsPartial
}

type wsPartial struct {
	started time.Time
	next    int
	parts   int
	data    []byte
}

// add takes part index of parts of message id, and returns the whole
// message once its last part came (nil before, and for a part out of
// order, which drops the message).
func (w *wsParts) add(id, index, count string, data []byte, now time.Time) []byte {
	i, err1 := strconv.Atoi(index)
	n, err2 := strconv.Atoi(count)
	if err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == nil {
		w.pending = make(map[string]*wsPartial)
	}
	for k, p := range w.pending {
		if now.Sub(p.started) > wsPartsMaxAge {
			delete(w.pending, k)
		}
	}
	p := w.pending[id]
	if p == nil {
		if i != 0 || len(w.pending) >= wsPartsKept {
			return nil // its first part was lost, or too many are open
		}
		p = &wsPartial{started: now, parts: n}
		w.pending[id] = p
	}
	if i != p.next || n != p.parts {
		delete(w.pending, id) // a part was lost
		return nil
	}
	p.data = append(p.data, data...)
	p.next++
	if p.next < p.parts {
		return nil
	}
	delete(w.pending, id)
	return p.data
}
