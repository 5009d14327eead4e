package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// The cluster demo (`kiln demo --nodes N`, `make cluster-demo`): N `kiln
// nats` servers routed to each other and N kiln nodes joined to them, each
// a real process of this binary, a demo workload submitted round-robin to
// the nodes (any node accepts any job), per-node progress, a summary, and
// every child stopped on the way out — Ctrl-C leaves no process.

// demoProc is one child process of the cluster demo.
type demoProc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

// start runs self with args, its output in logPath; the child dies with
// the demo even if the demo is killed (childAttr, where the OS allows).
func startDemoProc(name, logPath string, args ...string) (*demoProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &demoProc{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop asks the child to stop (SIGTERM: a kiln node drains and closes its
// queue) and kills it after grace.
func (p *demoProc) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// freeDemoPorts reserves n loopback ports by listening on port 0; they are
// released just before the children bind them.
func freeDemoPorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// clusterDemo runs the demo on n nodes. sets are the --set values given to
// the demo; every node gets them.
func clusterDemo(ctx context.Context, n int, dir, models string, sets []string, workflows string, jobs int, seed uint64, exit bool, out io.Writer) (err error) {
	if n < 2 || n > 9 {
		return usagef("demo", "--nodes %d: want 2 to 9", n)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ports, err := freeDemoPorts(3 * n)
	if err != nil {
		return err
	}
	natsPorts, route, api := ports[:n], ports[n:2*n], ports[2*n:]
	var procs []*demoProc
	defer func() {
		// Nodes first (they hold NATS connections), then the servers.
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop(15 * time.Second)
		}
		if len(procs) > 0 {
			fmt.Fprintf(out, "==> stopped %d processes\n", len(procs))
		}
	}()
	var urls []string
	for i := range n {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", natsPorts[i]))
	}
	fmt.Fprintf(out, "==> starting %d NATS servers (kiln nats, JetStream) and %d kiln nodes; logs in %s\n", n, n, dir)
	for i := range n {
		var routes []string
		for j := range n {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", route[j]))
			}
		}
		p, err := startDemoProc(fmt.Sprintf("nats%d", i+1), filepath.Join(dir, fmt.Sprintf("nats%d.log", i+1)),
			"nats", "--port", fmt.Sprint(natsPorts[i]), "--cluster-port", fmt.Sprint(route[i]),
			"--routes", strings.Join(routes, ","), "--store-dir", filepath.Join(dir, fmt.Sprintf("nats%d", i+1)))
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	for i, u := range urls {
		if err := waitTCP(ctx, strings.TrimPrefix(u, "nats://"), 30*time.Second); err != nil {
			return fmt.Errorf("nats%d: %w (see %s)", i+1, err, filepath.Join(dir, fmt.Sprintf("nats%d.log", i+1)))
		}
	}
	var clients []*client
	var bases []string
	for i := range n {
		name := fmt.Sprintf("node%d", i+1)
		args := []string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", api[i]), "--data-dir", filepath.Join(dir, name),
			"--models", models, "--set", "cluster.nats=" + strings.Join(urls, ","), "--set", "cluster.node_id=" + name}
		for _, s := range sets {
			args = append(args, "--set", s)
		}
		p, err := startDemoProc(name, filepath.Join(dir, name+".log"), args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		base := fmt.Sprintf("http://127.0.0.1:%d", api[i])
		bases = append(bases, base)
		clients = append(clients, newClient(base))
	}
	for i, c := range clients {
		if err := waitReady(ctx, c); err != nil {
			return fmt.Errorf("node%d: %w (see %s)", i+1, err, filepath.Join(dir, fmt.Sprintf("node%d.log", i+1)))
		}
		fmt.Fprintf(out, "    node%d ready on %s\n", i+1, bases[i])
	}
	ids, err := submitDemo(ctx, clients, workflows, jobs, seed, out)
	if err != nil {
		return err
	}
	t0 := time.Now()
	views := watchClusterDemo(ctx, clients[0], ids, n, out)
	printSummary(out, views, time.Since(t0), 0, bases[0])
	perNode := map[string]int{}
	for _, j := range views {
		if j.State == "done" {
			perNode[j.Node]++
		}
	}
	var parts []string
	for _, name := range sortedKeys(perNode) {
		parts = append(parts, fmt.Sprintf("%s %d", name, perNode[name]))
	}
	fmt.Fprintf(out, "done per node: %s\n", strings.Join(parts, ", "))
	if exit || ctx.Err() != nil {
		return nil
	}
	fmt.Fprintf(out, "==> the cluster keeps serving on %s; any node takes any job. Ctrl-C stops every process.\n", strings.Join(bases, " "))
	<-ctx.Done()
	return nil
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// waitTCP waits until addr accepts connections.
func waitTCP(ctx context.Context, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not take connections within %s", addr, within)
}

// watchClusterDemo prints one line a second, per node, until every job has
// ended: any node answers for any job (GET /v1/jobs/{id} names its node).
func watchClusterDemo(ctx context.Context, c *client, ids []string, nodes int, out io.Writer) map[string]jobView {
	views := map[string]jobView{}
	for {
		ended := 0
		type counts struct{ running, done, failed int }
		per := map[string]*counts{}
		queued := 0
		for _, id := range ids {
			var got jobView
			if err := c.do(ctx, http.MethodGet, "/v1/jobs/"+id, nil, &got); err == nil {
				views[id] = got
			}
			j := views[id]
			if j.terminal() {
				ended++
			}
			if j.Node == "" || j.State == "queued" {
				queued++
				continue
			}
			pc := per[j.Node]
			if pc == nil {
				pc = &counts{}
				per[j.Node] = pc
			}
			switch j.State {
			case "running":
				pc.running++
			case "done":
				pc.done++
			case "failed", "cancelled":
				pc.failed++
			}
		}
		var parts []string
		for i := range nodes {
			name := fmt.Sprintf("node%d", i+1)
			pc := per[name]
			if pc == nil {
				pc = &counts{}
			}
			parts = append(parts, fmt.Sprintf("%s: running %d done %d failed %d", name, pc.running, pc.done, pc.failed))
		}
		fmt.Fprintf(out, "[%s] queued %d | %s\n", time.Now().Format("15:04:05"), queued, strings.Join(parts, " | "))
		if ended == len(ids) || ctx.Err() != nil {
			return views
		}
		select {
		case <-ctx.Done():
			return views
		case <-time.After(time.Second):
		}
	}
}

// clusterDemoMark names a directory the cluster demo made, and so may
// empty again: each run starts a fresh cluster (new ports, new JetStream
// stores), and an old store's routes and jobs would only confuse it.
const clusterDemoMark = ".kiln-cluster-demo"

// freshClusterDir empties dir for a new cluster demo, if it is one the
// demo made (or does not exist yet); any other non-empty directory is
// refused rather than deleted.
func freshClusterDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, clusterDemoMark)); err != nil {
			return fmt.Errorf("--data-dir %s is not empty and not a cluster demo's: the cluster demo starts from a fresh directory", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, clusterDemoMark), nil, 0o644)
}
