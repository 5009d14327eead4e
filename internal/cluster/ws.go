package cluster

import (
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
)

// ForwardWS sends a WebSocket message for the client clientID to the other
// nodes, whose API delivers it to that client if it is connected there. It
// does not wait: a message that NATS cannot take now is lost, as a slow
// client's messages are.
func (c *Cluster) ForwardWS(clientID string, frame []byte) {
	m := nats.NewMsg(wsSubject)
	m.Header.Set(wsNodeHeader, c.cfg.NodeID)
	m.Header.Set(wsClientHeader, clientID)
	m.Data = frame
	_ = c.nc.PublishMsg(m)
}

// OnForwardedWS has deliver called with every WebSocket message another
// node forwards (ForwardWS), until the cluster is closed.
func (c *Cluster) OnForwardedWS(deliver func(clientID string, frame []byte)) error {
	_, err := c.nc.Subscribe(wsSubject, func(m *nats.Msg) {
		if m.Header.Get(wsNodeHeader) == c.cfg.NodeID {
			return // this node's own, delivered here already
		}
		if id := m.Header.Get(wsClientHeader); id != "" {
			deliver(id, m.Data)
		}
	})
	return err
}
