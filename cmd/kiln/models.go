package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"

	"github.com/kiln-gpu/kiln/internal/catalog"
)

const modelsHelp = `usage: kiln models [list] [flags]
       kiln models refresh [--token T] [flags]
       kiln models synth --dir DIR --from-workflows DIR [--scale F] [--seed N]

list (the default) prints the model catalog of a running kiln: each
model's format, family, component, size, VRAM footprint, backend and
checksum. refresh rescans kiln's models directory and prints what it added
and removed (it needs the admin token, as kiln policy does). synth writes a
synthetic model store here (kiln models synth --help).
`

// cmdModels dispatches `kiln models list|refresh|synth`.
func cmdModels(args []string) error {
	if len(args) > 0 && args[0] == "synth" {
		return cmdModelsSynth(args[1:])
	}
	sub := "list"
	if len(args) > 0 && (args[0] == "list" || args[0] == "refresh") {
		sub, args = args[0], args[1:]
	}
	fs := newFlags("models "+sub, modelsHelp)
	var pf policyFlags
	pf.register(fs.FlagSet)
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("models", "unknown subcommand or argument %q (want list, refresh or synth)", pos[0])
	}
	if sub == "refresh" {
		var res struct {
			Models  int      `json:"models"`
			Added   []string `json:"added"`
			Removed []string `json:"removed"`
			Errors  []string `json:"errors"`
		}
		if err := pf.request(http.MethodPost, "/v1/models/refresh", "application/json", []byte("{}"), true, &res); err != nil {
			return fmt.Errorf("models refresh: %w", err)
		}
		return out.print(res, func(w io.Writer) error {
			fmt.Fprintf(w, "%d models, %d added, %d removed\n", res.Models, len(res.Added), len(res.Removed))
			for _, a := range res.Added {
				fmt.Fprintln(w, "+", a)
			}
			for _, r := range res.Removed {
				fmt.Fprintln(w, "-", r)
			}
			for _, e := range res.Errors {
				fmt.Fprintln(os.Stderr, "error:", e)
			}
			return nil
		})
	}
	var list struct {
		Models []catalog.Entry `json:"models"`
	}
	if err := newClient(pf.addr).do(context.Background(), http.MethodGet, "/v1/models", nil, &list); err != nil {
		return fmt.Errorf("models list: %w", err)
	}
	if list.Models == nil {
		list.Models = []catalog.Entry{}
	}
	return out.print(list, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tFORMAT\tFAMILY\tCOMPONENT\tBYTES\tVRAM\tBACKEND\tSHA256")
		for _, m := range list.Models {
			sum := m.SHA256
			if len(sum) > 12 {
				sum = sum[:12]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.ID, m.Format, dash(m.Family), dash(m.Component), m.Bytes,
				gib(uint64(m.VRAMBytes)), dash(m.Backend), dash(sum))
		}
		return tw.Flush()
	})
}
