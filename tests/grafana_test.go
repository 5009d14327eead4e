package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// promtool finds Prometheus's promtool (Debian's prometheus package; .ci/run
// installs it).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("skip: needs promtool (apt-get install prometheus; .ci/run installs it)")
	}
	return p
}

// scrapedSeries is what a scrape of /metrics holds: each series name
// (histograms as _bucket, _sum and _count) with the label names it carries.
type scrapedSeries map[string]map[string]bool

var seriesLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? `)
var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

func parseScrape(text string) scrapedSeries {
	out := scrapedSeries{}
	for _, line := range strings.Split(text, "\n") {
		m := seriesLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := out[m[1]]
		if labels == nil {
			labels = map[string]bool{}
			out[m[1]] = labels
		}
		for _, l := range labelName.FindAllStringSubmatch(m[3], -1) {
			labels[l[1]] = true
		}
	}
	return out
}

var (
	selectorRe = regexp.MustCompile(`\b(kiln_[a-zA-Z0-9_]+)\s*(\{([^}]*)\})?`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	groupingRe = regexp.MustCompile(`\b(by|without)\s*\(([^)]*)\)`)
	labelVals  = regexp.MustCompile(`label_values\(\s*(kiln_[a-zA-Z0-9_]+)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
	// Labels Prometheus adds to every scraped series.
	targetLabels = map[string]bool{"instance": true, "job": true}
)

// checkQuery reports what in a PromQL query names a metric or a label that
// kiln does not export: every kiln_ name must be a scraped series, every
// matcher's label one of that series', every by/without label one of some
// series of the query.
func checkQuery(expr string, have scrapedSeries) []string {
	var problems []string
	used := map[string]bool{}
	for _, m := range labelVals.FindAllStringSubmatch(expr, -1) {
		if labels, ok := have[m[1]]; !ok {
			problems = append(problems, "no metric "+m[1])
		} else if !labels[m[2]] && !targetLabels[m[2]] {
			problems = append(problems, fmt.Sprintf("%s has no label %s", m[1], m[2]))
		}
		used[m[1]] = true
	}
	for _, m := range selectorRe.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		used[name] = true
		labels, ok := have[name]
		if !ok {
			problems = append(problems, "no metric "+name)
			continue
		}
		for _, lm := range matcherRe.FindAllStringSubmatch(m[3], -1) {
			if !labels[lm[1]] && !targetLabels[lm[1]] {
				problems = append(problems, fmt.Sprintf("%s has no label %s", name, lm[1]))
			}
		}
	}
	if len(used) == 0 {
		problems = append(problems, "names no kiln metric")
	}
	for _, g := range groupingRe.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[2], ",") {
			l = strings.TrimSpace(l)
			if l == "" || targetLabels[l] {
				continue
			}
			found := false
			for name := range used {
				found = found || have[name][l]
			}
			if !found {
				problems = append(problems, fmt.Sprintf("%s (%s) is a label of none of %v", l, g[1], keys(used)))
			}
		}
	}
	return problems
}

// metricValue is the value of one series (its full name with labels, as
// /metrics spells it) in a scrape; -1 when absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestMetricsDashboardsAlerts scrapes a real kiln that has run jobs, a
// rejected submission and a canary: its /metrics passes `promtool check
// metrics` with no complaint; every query of the Grafana dashboard
// (deploy/grafana/kiln.json) and of the alert rules
// (deploy/prometheus/kiln-alerts.yml) names metrics and labels that kiln
// exports, and is PromQL that promtool accepts; the rules pass `promtool
// check rules`.
func TestMetricsDashboardsAlerts(t *testing.T) {
	tool := promtool(t)
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.02", "workers.per_device=1")
	spec, _ := json.Marshal(map[string]any{"kind": "scheduling", "policy": "edf", "type": "canary", "steps": []int{50, 100},
		"step_duration": "1s", "min_samples": 2, "deadline": "5m"})
	if code, data := k.admin("POST", "/v1/experiments", spec); code != http.StatusCreated {
		t.Fatalf("start a canary: HTTP %d: %s", code, data)
	}
	var ids []string
	for i := 0; i < 6; i++ {
		ids = append(ids, k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 2, i), []string{"batch", "interactive"}[i%2]))
	}
	if code, _ := k.do("POST", "/v1/jobs", []byte(`{"workflow": {}}`)); code != http.StatusBadRequest {
		t.Errorf("an empty workflow: HTTP %d, want 400", code)
	}
	waitFor(t, 30*time.Second, "the jobs to finish", func() bool {
		for _, id := range ids {
			if s := k.job(id).State; s == "queued" || s == "running" {
				return false
			}
		}
		return true
	})
	code, body := k.do("GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("GET /metrics: HTTP %d", code)
	}

	cmd := exec.Command(tool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	have := parseScrape(string(body))
	for _, want := range []string{"kiln_build_info", "kiln_http_requests_total", "kiln_device_ledger_reserved_bytes", "kiln_experiments", "kiln_result_cache_lookups_total"} {
		if have[want] == nil {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, gone := range []string{"kiln_vram_reserved_bytes", "kiln_queue_submit_commits_total", "kiln_queue_jobs_committed_total"} {
		if have[gone] != nil {
			t.Errorf("/metrics still has %s (renamed: docs/metrics.md)", gone)
		}
	}
	if !bytes.Contains(body, []byte(`kiln_http_requests_total{code="202",method="POST",route="POST /v1/jobs"}`)) {
		t.Error("the submissions are not counted by route")
	}

	// Every query of the Grafana dashboard.
	raw, err := os.ReadFile("../deploy/grafana/kiln.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name  string
				Query any
			}
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("deploy/grafana/kiln.json: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, problem := range checkQuery(tg.Expr, have) {
				t.Errorf("grafana panel %q: %s in %s", p.Title, problem, tg.Expr)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			s, _ := q["query"].(string)
			for _, problem := range checkQuery(s, have) {
				t.Errorf("grafana variable %s: %s in %s", v.Name, problem, s)
			}
		}
	}
	if len(exprs) < 25 {
		t.Errorf("only %d queries in the dashboard", len(exprs))
	}

	// Every alert's query, and the rules file as promtool sees it.
	rulesPath := "../deploy/prometheus/kiln-alerts.yml"
	raw, err = os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			for _, problem := range checkQuery(r.Expr, have) {
				t.Errorf("alert %s: %s in %s", r.Alert, problem, r.Expr)
			}
		}
	}
	for _, want := range []string{"KilnQueueGrowing", "KilnGPUDegraded", "KilnPolicyFaults", "KilnExperimentRolledBack", "KilnWorkerCrashLoop"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
	if out, err := exec.Command(tool, "check", "rules", rulesPath).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}

	// The dashboard's queries are PromQL promtool accepts: each becomes a
	// recording rule, with Grafana's variables given values.
	var rec strings.Builder
	rec.WriteString("groups:\n  - name: grafana\n    rules:\n")
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")
	for i, e := range exprs {
		q, _ := json.Marshal(grafanaVars.Replace(e))
		fmt.Fprintf(&rec, "      - record: kiln:grafana_query_%d\n        expr: %s\n", i, q)
	}
	recPath := filepath.Join(t.TempDir(), "grafana-queries.yml")
	if err := os.WriteFile(recPath, []byte(rec.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, "check", "rules", recPath).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries as promtool parses them: %v\n%s", err, out)
	}
}

// The checker itself: what it must refuse.
func TestCheckQueryRefuses(t *testing.T) {
	have := parseScrape("kiln_queue_depth{class=\"batch\"} 1\nkiln_jobs{state=\"done\"} 2\n")
	for expr, bad := range map[string]bool{
		`sum by (class) (kiln_queue_depth{instance=~"$instance"})`: false,
		`kiln_queue_depthh`:                                  true,
		`kiln_queue_depth{klass="batch"}`:                    true,
		`sum by (state) (kiln_queue_depth)`:                  true,
		`sum by (state) (kiln_jobs) + on() kiln_queue_depth`: false,
		`label_values(kiln_jobs, state)`:                     false,
		`label_values(kiln_jobs, class)`:                     true,
		`vector(1)`:                                          true,
	} {
		if got := len(checkQuery(expr, have)) > 0; got != bad {
			t.Errorf("checkQuery(%s): refused %v, want %v (%v)", expr, got, bad, checkQuery(expr, have))
		}
	}
}
