package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/kiln-gpu/kiln/internal/shadow"
)

const shadowUsage = `usage: kiln experiment shadow [--addr URL] [--json]

Shows what each candidate eviction policy would have done on this node's
live model accesses (ghost caches; experiments.shadow.policies): hit ratio,
misses, bytes loaded and estimated load time. No admin token needed.
`

// cmdExperimentShadow implements `kiln experiment shadow`.
func cmdExperimentShadow(args []string) error {
	fs := newFlags("experiment shadow", shadowUsage)
	var p policyFlags
	p.register(fs.FlagSet)
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("experiment shadow", "unexpected argument %q", pos[0])
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
