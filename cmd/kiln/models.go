package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"text/tabwriter"
)

// cmdModelsList runs `kiln models list [--addr A]` (the default) and `kiln
// models refresh [--addr A]` against a running kiln. `kiln models synth`
// stays in admin.go; the caller dispatches "synth" there first.
func cmdModelsList(args []string) error {
	sub := "list"
	if len(args) > 0 && (args[0] == "list" || args[0] == "refresh") {
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("models "+sub, flag.ContinueOnError)
	addr := fs.String("addr", "", "kiln address (default $KILN_ADDR or 127.0.0.1:8188)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := newClient(*addr)
	if sub == "refresh" {
		var res struct {
			Models  int      `json:"models"`
			Added   []string `json:"added"`
			Removed []string `json:"removed"`
			Errors  []string `json:"errors"`
		}
		if err := c.do(context.Background(), http.MethodPost, "/v1/models/refresh", []byte("{}"), &res); err != nil {
			return fmt.Errorf("models refresh: %w", err)
		}
		fmt.Printf("%d models, %d added, %d removed\n", res.Models, len(res.Added), len(res.Removed))
		for _, a := range res.Added {
			fmt.Println("+", a)
		}
		for _, r := range res.Removed {
			fmt.Println("-", r)
		}
		for _, e := range res.Errors {
			fmt.Fprintln(os.Stderr, "error:", e)
		}
		return nil
	}
	var out struct {
		Models []struct {
			ID        string `json:"id"`
			Bytes     int64  `json:"bytes"`
			Format    string `json:"format"`
			Family    string `json:"family"`
			Component string `json:"component"`
			VRAMBytes int64  `json:"vram_bytes"`
			Backend   string `json:"backend"`
			SHA256    string `json:"sha256"`
		} `json:"models"`
	}
	if err := c.do(context.Background(), http.MethodGet, "/v1/models", nil, &out); err != nil {
		return fmt.Errorf("models list: %w", err)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tFORMAT\tFAMILY\tCOMPONENT\tBYTES\tVRAM\tBACKEND\tSHA256")
	for _, m := range out.Models {
		sum := m.SHA256
		if len(sum) > 12 {
			sum = sum[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.ID, m.Format, m.Family, m.Component, m.Bytes, gib(uint64(m.VRAMBytes)), m.Backend, sum)
	}
	return tw.Flush()
}
