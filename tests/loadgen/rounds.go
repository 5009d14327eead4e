package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// kilnPID is the process id of the kiln loadgen started (0 with -addr):
// its CPU time per phase is read from /proc.
var kilnPID int

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// cpuTicks returns the user+system CPU time of process pid so far, from
// /proc/PID/stat; 0 when it cannot be read (not Linux, or no pid).
func cpuTicks(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis are space-separated: utime and stime are the
	// 12th and 13th of them.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on every Linux kiln runs on.
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// machineIdle returns the idle and total jiffies of all CPUs so far, from
// the first line of /proc/stat.
func machineIdle() (idle, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return idle, total
}

// loadAvg returns the first field of /proc/loadavg, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// measured is one phase of one round.
type measured struct {
	res     result
	cpu     time.Duration // kiln's CPU time during the phase
	idle    float64       // the machine's idle share during the phase
	commits float64       // durable commits during the phase
	load    string        // load average at the phase's end
}

func (m measured) cpuPerReq() float64 {
	if m.res.ok == 0 || m.cpu == 0 {
		return 0
	}
	return float64(m.cpu.Microseconds()) / float64(m.res.ok)
}

func (m measured) p99() time.Duration {
	l := append([]time.Duration(nil), m.res.latencies...)
	if len(l) == 0 {
		return 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[int(0.99*float64(len(l)-1))]
}

// runRounds alternates the phases against one kiln, n times: validate-only,
// durable /v1/jobs and, with withPrompt, durable /prompt. Alternating
// within one run puts every phase under the same machine load and the same
// standing queue (it grows through the run), so each round's ratios
// compare like with like.
func runRounds(base string, wf, body []byte, n, conc int, d time.Duration, withPrompt bool, profileDir string) {
	same := func(int) []byte { return body }
	var seeded func(int) []byte
	if withPrompt {
		var err error
		if seeded, err = seededPrompt(wf); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
	}
	type phaseDef struct {
		name string
		url  string
		body func(int) []byte
		want int
	}
	phases := []phaseDef{
		{"validate-only", base + "/v1/jobs?dry_run=1", same, http.StatusOK},
		{"durable /v1/jobs", base + "/v1/jobs", same, http.StatusAccepted},
	}
	if withPrompt {
		phases = append(phases, phaseDef{"durable /prompt", base + "/prompt", seeded, http.StatusOK})
	}
	if profileDir != "" {
		_ = os.MkdirAll(profileDir, 0o755)
	}
	results := make([][]measured, n)
	for r := range n {
		for pi, ph := range phases {
			var prof chan struct{}
			if profileDir != "" {
				prof = make(chan struct{})
				name := filepath.Join(profileDir, fmt.Sprintf("r%d-%d.pprof", r+1, pi))
				go func() {
					defer close(prof)
					saveProfile(base, name, d-time.Second)
				}()
			}
			if profileDir != "" {
				saveURL(base+"/debug/pprof/allocs", filepath.Join(profileDir, fmt.Sprintf("r%d-%d.allocs-before", r+1, pi)))
			}
			m0 := scrape(base)
			i0, t0 := machineIdle()
			c0 := cpuTicks(kilnPID)
			res := run(ph.url, ph.body, conc, d, ph.want)
			c1 := cpuTicks(kilnPID)
			i1, t1 := machineIdle()
			if prof != nil {
				<-prof
			}
			m1 := scrape(base)
			if profileDir != "" {
				// Allocations during the phase: go tool pprof -sample_index=alloc_space -diff_base BEFORE AFTER.
				saveURL(base+"/debug/pprof/allocs", filepath.Join(profileDir, fmt.Sprintf("r%d-%d.allocs-after", r+1, pi)))
				saveURL(base+"/debug/pprof/heap?gc=1", filepath.Join(profileDir, fmt.Sprintf("r%d-%d.heap", r+1, pi)))
			}
			m := measured{res: res, cpu: c1 - c0, idle: ratio(float64(i1-i0), float64(t1-t0)), load: loadAvg(),
				commits: m1["kiln_queue_commits_total"] - m0["kiln_queue_commits_total"]}
			results[r] = append(results[r], m)
			fmt.Printf("round %d %-17s %6.0f req/s  p50 %-9s p99 %-9s kiln CPU %4.0f µs/req  idle %2.0f%%  jobs/commit %5.1f  errors %d  load %s\n",
				r+1, ph.name, res.rate(), pct(res, 0.5), m.p99().Round(10*time.Microsecond), m.cpuPerReq(), 100*m.idle,
				ratio(float64(res.ok), m.commits), res.errs, m.load)
			if res.firstErr != "" {
				fmt.Printf("  first error: %s\n", res.firstErr)
			}
		}
	}
	fmt.Println("per round: durable/validate-only throughput, kiln CPU per request durable − validate-only")
	for r, ms := range results {
		dry, dur := ms[0], ms[1]
		line := fmt.Sprintf("round %d: /v1/jobs %.2f (CPU %+.0f µs, ×%.2f)", r+1, ratio(dur.res.rate(), dry.res.rate()),
			dur.cpuPerReq()-dry.cpuPerReq(), ratio(dur.cpuPerReq(), dry.cpuPerReq()))
		if withPrompt {
			p := ms[2]
			line += fmt.Sprintf("; /prompt %.2f (CPU %+.0f µs, ×%.2f)", ratio(p.res.rate(), dry.res.rate()),
				p.cpuPerReq()-dry.cpuPerReq(), ratio(p.cpuPerReq(), dry.cpuPerReq()))
		}
		fmt.Println(line)
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func pct(r result, q float64) time.Duration {
	l := append([]time.Duration(nil), r.latencies...)
	if len(l) == 0 {
		return 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[int(q*float64(len(l)-1))].Round(10 * time.Microsecond)
}

// saveProfile writes a CPU profile of kiln over d to name.
func saveProfile(base, name string, d time.Duration) {
	secs := max(1, int(d.Seconds()))
	saveURL(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), name)
}

// saveURL writes what a GET of url answers to name.
func saveURL(url, name string) {
	resp, err := http.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: profile:", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "loadgen: profile: HTTP %d (is api.pprof=true set?)\n", resp.StatusCode)
		return
	}
	f, err := os.Create(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: profile:", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}
