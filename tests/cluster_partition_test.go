package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// tcpProxy forwards TCP connections from a loopback port to one upstream
// address, and can cut them as a network partition does: Cut stops moving
// bytes in both directions and leaves every connection open (no FIN, no
// RST: the peers find out only by their own timeouts), new connections
// included; Heal moves the held bytes on. It is a real proxy on real
// sockets between a kiln node and its NATS servers.
type tcpProxy struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	open   chan struct{} // closed while bytes flow; a fresh one while cut
	conns  map[net.Conn]struct{}
	closed chan struct{}
}

func startProxy(t *testing.T, upstream string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, upstream: upstream, open: make(chan struct{}), conns: map[net.Conn]struct{}{}, closed: make(chan struct{})}
	close(p.open)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the proxy as a NATS URL.
func (p *tcpProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *tcpProxy) accept() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns[down], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(up, down)
		go p.pipe(down, up)
	}
}

// pipe copies src to dst, holding each chunk while the proxy is cut.
func (p *tcpProxy) pipe(dst, src net.Conn) {
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.open
			p.mu.Unlock()
			select {
			case <-gate:
			case <-p.closed:
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Cut stops every byte; Heal lets them flow again.
func (p *tcpProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

func (p *tcpProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

func (p *tcpProxy) close() {
	select {
	case <-p.closed:
		return
	default:
	}
	close(p.closed)
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// TestClusterPartition cuts one kiln node of three off from NATS (a TCP
// proxy between it and each NATS server stops moving bytes, as a
// partition does, without closing anything) while it runs jobs: its
// /readyz says it cannot take work, its jobs are redelivered to the other
// two and finish there, once each; its consumers are deleted once the
// others have adopted its queue; when the network heals it neither runs
// nor reports again a job that finished elsewhere, creates its consumers
// again and takes work.
func TestClusterPartition(t *testing.T) {
	start := time.Now()
	servers := startNATSCluster(t)
	var direct, proxied []string
	var proxies []*tcpProxy
	for _, s := range servers {
		direct = append(direct, s.client)
		p := startProxy(t, strings.TrimPrefix(s.client, "nats://"))
		proxies = append(proxies, p)
		proxied = append(proxied, p.URL())
	}
	common := []string{
		"cluster.ack_wait=2s", "cost.time_scale=0.05", "workers.per_device=1",
		// least-loaded spreads a burst over the three nodes (each submit
		// counts against the node it chose), so node3 runs jobs when cut.
		"policies.routing=least-loaded",
	}
	var nodes []*kilnProc
	for i := range 3 {
		sets := append([]string{fmt.Sprintf("cluster.node_id=node%d", i+1)}, common...)
		if i < 2 {
			sets = append(sets, "cluster.nats="+strings.Join(direct, ","))
		} else {
			// Only through the proxies: the servers' announced addresses
			// would be a way around them.
			sets = append(sets, "cluster.nats="+strings.Join(proxied, ","), "cluster.ignore_discovered_servers=true")
		}
		nodes = append(nodes, startKiln(t, t.TempDir(), sets...))
	}
	victim := nodes[2]
	for _, k := range nodes {
		waitFor(t, 10*time.Second, k.base+" to see three healthy nodes", func() bool {
			n := 0
			for _, v := range clusterNodes(t, k) {
				if v.Healthy {
					n++
				}
			}
			return n == 3
		})
	}
	nc, err := nats.Connect(strings.Join(direct, ","), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// 12 jobs, submitted to the two connected nodes: 4 or so routed to
	// each node, node3's two workers run two and hold the rest.
	var ids []string
	for i := range 12 {
		ids = append(ids, nodes[i%2].submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 60, 100+i), "batch"))
	}
	var held []string
	waitFor(t, 15*time.Second, "node3 to run a job", func() bool {
		held = held[:0]
		for _, id := range ids {
			if j := nodes[0].clusterJob(id); j.Node == "node3" && j.State == "running" {
				held = append(held, id)
			}
		}
		return len(held) > 0
	})
	for _, p := range proxies {
		p.Cut()
	}
	cutAt := time.Now()
	// What node3 held at the cut, by the registry (a job it finished just
	// before is not among them).
	still := held[:0]
	for _, id := range held {
		if j := nodes[0].clusterJob(id); j.Node == "node3" && j.State == "running" {
			still = append(still, id)
		}
	}
	held = still
	t.Logf("cut node3 off from NATS at %s, holding %d running jobs", cutAt.Sub(start).Round(time.Millisecond), len(held))

	// node3 says it cannot take work: its pings go unanswered (every
	// ack_wait/4, at least 1 s) and no heartbeat reaches JetStream.
	waitFor(t, 8*time.Second, "node3's /readyz to say it cannot take work", func() bool {
		code, _ := victim.do("GET", "/readyz", nil)
		return code == 503
	})
	t.Logf("node3's /readyz answered 503 %s after the cut", time.Since(cutAt).Round(time.Millisecond))

	// Its running jobs restart on the other nodes (after its heartbeat has
	// expired, they adopt its queue) and every job finishes there.
	waitFor(t, 15*time.Second, "node3's jobs to restart elsewhere", func() bool {
		for _, id := range held {
			if j := nodes[0].clusterJob(id); j.Node == "node3" || j.Node == "" {
				return false
			}
		}
		return true
	})
	restarted := time.Since(cutAt)
	t.Logf("node3's %d running jobs restarted elsewhere %s after the cut (cluster.ack_wait=2s)", len(held), restarted.Round(time.Millisecond))
	waitFor(t, 20*time.Second, "every job to finish on node1 or node2", func() bool {
		for _, id := range ids {
			if j := nodes[0].clusterJob(id); j.State != "done" {
				return false
			}
		}
		return true
	})
	revs := map[string]uint64{}
	for _, id := range ids {
		j := nodes[0].clusterJob(id)
		if j.Node == "node3" {
			t.Errorf("job %s finished on node3, which was cut off", id)
		}
		revs[id] = registryRevision(t, nc, id)
	}
	for _, id := range held {
		if j := nodes[0].clusterJob(id); j.Attempts < 2 {
			t.Errorf("job %s, running on node3 at the cut, finished on %s after %d attempts", id, j.Node, j.Attempts)
		}
	}
	// With its queue adopted and drained, node3's consumers are deleted:
	// JetStream does not keep a consumer for every node that ever died
	// (once its heartbeat has been missing for cluster.retireGrace, 12 s).
	waitFor(t, 25*time.Second, "node3's consumers to be deleted", func() bool {
		return len(nodeConsumers(t, nc, "node3")) == 0
	})
	t.Logf("node3's consumers deleted %s after the cut", time.Since(cutAt).Round(time.Millisecond))
	runsAtHeal := jobsRun(t, victim)

	for _, p := range proxies {
		p.Heal()
	}
	healedAt := time.Now()
	waitFor(t, 10*time.Second, "node3's /readyz to be 200 again", func() bool {
		code, _ := victim.do("GET", "/readyz", nil)
		return code == 200
	})
	waitFor(t, 10*time.Second, "node3 to create its consumers again", func() bool {
		return len(nodeConsumers(t, nc, "node3")) == 2
	})
	t.Logf("node3 ready again %s after the network healed", time.Since(healedAt).Round(time.Millisecond))
	// Back, node3 runs nothing of what finished elsewhere and writes no
	// result over it: the records keep their revisions, its workers
	// their count of runs. (Two seconds: a late result is sent at once,
	// and a redelivery within ack_wait.)
	time.Sleep(2 * time.Second)
	for _, id := range ids {
		if rev := registryRevision(t, nc, id); rev != revs[id] {
			t.Errorf("job %s's record was written again after node3 came back: revision %d → %d (%+v)", id, revs[id], rev, nodes[0].clusterJob(id))
		}
	}
	if n := jobsRun(t, victim); n != runsAtHeal {
		t.Errorf("node3's workers ran %d jobs after it came back, with nothing routed to it", n-runsAtHeal)
	}

	// And it takes work again: least-loaded sends it some of a burst.
	waitFor(t, 10*time.Second, "node1 to see node3 healthy", func() bool { return clusterNodes(t, nodes[0])["node3"].Healthy })
	var more []string
	for i := range 6 {
		more = append(more, nodes[i%2].submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, 500+i), "batch"))
	}
	ranOn := map[string]int{}
	waitFor(t, 20*time.Second, "the jobs after the heal to finish", func() bool {
		clear(ranOn)
		for _, id := range more {
			j := nodes[0].clusterJob(id)
			if j.State != "done" {
				return false
			}
			ranOn[j.Node]++
		}
		return true
	})
	if ranOn["node3"] == 0 {
		t.Errorf("no job ran on node3 after it came back: %v", ranOn)
	}
	t.Logf("after the heal: %v; partition test took %s", ranOn, time.Since(start).Round(time.Millisecond))
}

// registryRevision is the revision of a job's record in KILN_jobs, read
// from the stream's leader.
func registryRevision(t *testing.T, nc *nats.Conn, id string) uint64 {
	t.Helper()
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV.KILN_jobs." + id})
	msg, err := nc.Request("$JS.API.STREAM.MSG.GET.KV_KILN_jobs", req, 5*time.Second)
	if err != nil {
		t.Fatalf("registry read of %s: %v", id, err)
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
	}
	if json.Unmarshal(msg.Data, &resp) != nil || resp.Message == nil {
		t.Fatalf("registry read of %s: %s", id, msg.Data)
	}
	return resp.Message.Seq
}

// nodeConsumers lists the work stream's consumers of one node's routed
// jobs.
func nodeConsumers(t *testing.T, nc *nats.Conn, node string) []string {
	t.Helper()
	msg, err := nc.Request("$JS.API.CONSUMER.NAMES.KILN_WORK", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("consumer names: %v", err)
	}
	var resp struct {
		Consumers []string `json:"consumers"`
		Error     *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil || resp.Error != nil {
		t.Fatalf("consumer names: %v %s", err, msg.Data)
	}
	var out []string
	for _, c := range resp.Consumers {
		if strings.HasPrefix(c, "kiln-node-"+node+"-") {
			out = append(out, c)
		}
	}
	return out
}

// jobsRun is the number of jobs a node's workers have run.
func jobsRun(t *testing.T, k *kilnProc) int {
	t.Helper()
	code, data := k.do("GET", "/v1/workers", nil)
	var out struct {
		Workers []struct {
			JobsDone int `json:"jobs_done"`
		} `json:"workers"`
	}
	if code != 200 || json.Unmarshal(data, &out) != nil {
		t.Fatalf("GET /v1/workers on %s: HTTP %d: %s", k.base, code, data)
	}
	n := 0
	for _, w := range out.Workers {
		n += w.JobsDone
	}
	return n
}
