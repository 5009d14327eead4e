package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/shadow"
)

const shadowUsage = `usage: kiln experiment shadow [--routing] [--addr URL] [--json]

Shows what each candidate eviction policy would have done on this node's
live model accesses (ghost caches; experiments.shadow.policies): hit ratio,
misses, bytes loaded and estimated load time. No admin token needed.

With --routing, on a node of a cluster: what each candidate routing policy
(experiments.shadow.routing) would have chosen for the jobs this node
routed, priced beside the node's own choices — the mean time before a job
could have started (delay + wait + loads, by the nodes' estimates), the
models it would have loaded, and how often it agreed with the live choice.
`

// cmdExperimentShadow implements `kiln experiment shadow`.
func cmdExperimentShadow(args []string) error {
	fs := newFlags("experiment shadow", shadowUsage)
	var p policyFlags
	p.register(fs.FlagSet)
	routing := fs.Bool("routing", false, "the routing shadow of a cluster node (GET /v1/cluster/shadow)")
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("experiment shadow", "unexpected argument %q", pos[0])
	}
	if *routing {
		var rep experiment.RoutingShadowReport
		if err := p.request("GET", "/v1/cluster/shadow", "", nil, false, &rep); err != nil {
			return err
		}
		return out.print(rep, func(w io.Writer) error { return writeRoutingShadow(w, rep) })
	}
	var rep shadow.Report
	if err := p.request("GET", "/v1/experiments/shadow", "", nil, false, &rep); err != nil {
		return err
	}
	return out.print(rep, func(w io.Writer) error { return writeShadow(w, rep) })
}

func writeShadow(w io.Writer, rep shadow.Report) error {
	fmt.Fprintf(w, "%d accesses replayed since %s (%d dropped), %.0f µs per access\n\n",
		rep.Accesses, rep.Since.Format("2006-01-02 15:04:05"), rep.Dropped, rep.OverheadPerAccessUS)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tVRAM HIT RATIO\tMISSES\tLOADED\tLOAD TIME\tEVICTIONS\tNOTE")
	for _, c := range rep.Candidates {
		note := ""
		switch {
		case c.Faulted:
			note = "faulted: " + c.Fault
		case c.Live:
			note = "live policy"
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%d\t%s\t%.1f s\t%d\t%s\n", c.Policy, c.HitRatio, c.Misses, gib(c.BytesLoaded), c.LoadTimeS, c.Evictions, note)
	}
	return tw.Flush()
}

func writeRoutingShadow(w io.Writer, rep experiment.RoutingShadowReport) error {
	fmt.Fprintf(w, "%d routing decisions judged (%d dropped), %.0f µs each off the submit's path\n\n",
		rep.Decisions, rep.Dropped, rep.OverheadPerDecisionUS)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tMEAN TIME TO START\tVS LIVE\tMODEL LOADS\tAGREED\tNOTE")
	fmt.Fprintf(tw, "(live decisions)\t%.2f s\t1.00\t%d\t-\t\n", rep.Live.MeanPriceS, rep.Live.ModelLoads)
	for _, c := range rep.Candidates {
		var notes []string
		if c.NoNode > 0 {
			notes = append(notes, fmt.Sprintf("chose no node %d times", c.NoNode))
		}
		if c.Faults > 0 {
			notes = append(notes, fmt.Sprintf("%d faults", c.Faults))
		}
		vs := "-"
		if c.VsLive > 0 {
			vs = fmt.Sprintf("%.2f", c.VsLive)
		}
		fmt.Fprintf(tw, "%s\t%.2f s\t%s\t%d\t%.0f%%\t%s\n", c.Policy, c.MeanPriceS, vs, c.ModelLoads, 100*c.Agreed, strings.Join(notes, "; "))
	}
	return tw.Flush()
}
