package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"

	"github.com/kiln-gpu/kiln/internal/config"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	"github.com/kiln-gpu/kiln/internal/workflow"
	"go.yaml.in/yaml/v3"
)

const devicesHelp = `usage: kiln devices [flags]

Lists the GPUs as kiln sees them: memory, what the VRAM ledger reserved,
utilisation, temperature and health. When no kiln answers at --addr, the
devices are opened here as kiln serve would (with --config and --set), and
"source: local" says so on stderr.
`

func cmdDevices(args []string) error {
	fs := newFlags("devices", devicesHelp)
	addr := fs.String("addr", "", "kiln's `URL`; when kiln is not running, devices are opened locally")
	var cf configFlags
	cf.register(fs.FlagSet)
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("devices", "unexpected argument %q", pos[0])
	}
	var list struct {
		Devices []device.Status `json:"devices"`
	}
	source := "kiln at " + newClient(*addr).base
	err = newClient(*addr).do(context.Background(), http.MethodGet, "/v1/devices", nil, &list)
	if err != nil {
		var apiErr *apiError
		if errors.As(err, &apiErr) {
			return err
		}
		// No daemon: open the devices here, as kiln serve would.
		cfg, cerr := cf.load()
		if cerr != nil {
			return cerr
		}
		log, _ := logging.New(cfg.Log, os.Stderr)
		set, derr := device.Open(cfg.Devices, log)
		if derr != nil {
			return derr
		}
		defer set.Close()
		list.Devices = set.Describe()
		source = "local (kiln not running)"
	}
	if list.Devices == nil {
		list.Devices = []device.Status{}
	}
	fmt.Fprintf(os.Stderr, "source: %s\n", source)
	return out.print(list, func(w io.Writer) error { return writeDevices(w, list.Devices) })
}

func writeDevices(w io.Writer, devices []device.Status) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tNAME\tBACKEND\tMEMORY\tUSED\tRESERVED\tUSABLE\tUTIL\tTEMP\tHEALTH")
	for _, d := range devices {
		health := "ok"
		if d.Degraded {
			health = "degraded: " + d.DegradedReason
		}
		backend := d.Backend
		if d.Simulated {
			backend += " (simulated)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Index, d.Name, backend, gib(d.MemoryTotal), optGiB(d.MemoryUsed),
			gib(d.Reserved), gib(d.Usable), optPercent(d.Utilization), optTemp(d.TemperatureC), health)
	}
	return tw.Flush()
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

func optGiB(b *uint64) string {
	if b == nil {
		return "-"
	}
	return gib(*b)
}

func optPercent[T ~int | ~uint | ~uint32 | ~float64](p *T) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%v%%", *p)
}

func optTemp[T ~int | ~uint | ~uint32 | ~float64](p *T) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%v C", *p)
}

const configHelp = `usage: kiln config print [--config FILE] [--set k=v]... [flags]
       kiln config validate FILE

print writes the effective config: the embedded default, then --config
FILE, then KILN_* environment variables, then --set k=v (YAML by default;
-o json). validate checks a config file against the schema without
starting anything.
`

func cmdConfig(args []string) error {
	if len(args) == 0 || isHelp(args[0]) {
		if len(args) == 0 {
			return usagef("config", "want a subcommand: print or validate FILE")
		}
		fmt.Print(configHelp)
		return nil
	}
	sub, rest := args[0], args[1:]
	fs := newFlags("config "+sub, configHelp)
	switch sub {
	case "print":
		var cf configFlags
		cf.register(fs.FlagSet)
		out := fs.output("yaml")
		pos, err := fs.parse(rest)
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("config print", "unexpected argument %q (a config file is --config FILE)", pos[0])
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		y, err := cfg.YAML()
		if err != nil {
			return err
		}
		if out.format == "yaml" || out.format == "table" {
			_, err = os.Stdout.Write(y)
			return err
		}
		var doc any
		if err := yaml.Unmarshal(y, &doc); err != nil {
			return err
		}
		return out.print(doc, nil)
	case "validate":
		pos, err := fs.parse(rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("config validate", "want exactly one FILE")
		}
		if err := config.ValidateFile(pos[0]); err != nil {
			return err
		}
		fmt.Printf("%s: ok\n", pos[0])
		return nil
	}
	return usagef("config", "unknown subcommand %q (want print or validate)", sub)
}

const modelsSynthHelp = `usage: kiln models synth --dir DIR --from-workflows DIR [--scale F] [--seed N] [flags]

Writes a synthetic model store: a real, loadable file for every model the
API-format workflows in --from-workflows name, at --scale of the real
model's size, with deterministic content. Prints what it wrote (-o json:
one array of {id, folder, name, family, path, bytes, nominal_bytes,
skipped, reason}).
`

// synthFile is one file models synth wrote, with JSON names.
type synthFile struct {
	ID           string `json:"id"`
	Folder       string `json:"folder"`
	Name         string `json:"name"`
	Family       string `json:"family"`
	Path         string `json:"path"`
	Bytes        int64  `json:"bytes"`
	NominalBytes int64  `json:"nominal_bytes"`
	Skipped      bool   `json:"skipped"`
	Reason       string `json:"reason,omitempty"`
}

func cmdModelsSynth(args []string) error {
	fs := newFlags("models synth", modelsSynthHelp)
	dir := fs.String("dir", "", "model store `DIR` to write into (ComfyUI models layout)")
	from := fs.String("from-workflows", "", "`DIR` of API-format workflow JSON files")
	scale := fs.Float64("scale", defaultSynthScale, "file size as a fraction of the real model's size")
	seed := fs.Uint64("seed", 1, "seed for the files' deterministic content")
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("models synth", "unexpected argument %q", pos[0])
	}
	if *dir == "" || *from == "" {
		return usagef("models synth", "--dir and --from-workflows are required")
	}
	var skipped io.Writer = os.Stderr
	written, err := synthStore(*dir, *from, *scale, *seed, skipped)
	if err != nil {
		return err
	}
	files := make([]synthFile, 0, len(written))
	var total int64
	for _, w := range written {
		total += w.Bytes
		files = append(files, synthFile{ID: w.Ref.ID, Folder: w.Ref.Folder, Name: w.Ref.Name, Family: w.Ref.Family,
			Path: w.Path, Bytes: w.Bytes, NominalBytes: w.NominalBytes, Skipped: w.Skipped, Reason: w.Reason})
	}
	return out.print(files, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "MODEL\tFAMILY\tBYTES\tSTANDS FOR\tNOTE")
		for _, f := range files {
			note := "written"
			if f.Skipped {
				note = "kept: " + f.Reason
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.ID, dash(f.Family), mib(f.Bytes), gib(uint64(f.NominalBytes)), note)
		}
		tw.Flush()
		_, err := fmt.Fprintf(w, "%d model files in %s (%s)\n", len(files), *dir, mib(total))
		return err
	})
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// defaultSynthScale keeps the demo store at a few hundred MiB: the demo
// workflows name about 60 GB of real models.
const defaultSynthScale = 0.004

// synthStore writes a synthetic model for every model the workflows in dir
// name. Workflows that do not parse are reported and skipped.
func synthStore(dir, workflows string, scale float64, seed uint64, w io.Writer) ([]modelfile.Written, error) {
	files, err := filepath.Glob(filepath.Join(workflows, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.json workflows in %s", workflows)
	}
	sort.Strings(files)
	seen := map[string]bool{}
	var refs []workflow.ModelRef
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		g, err := workflow.Parse(data, workflow.Limits{}.WithDefaults())
		if err != nil {
			if w != nil {
				fmt.Fprintf(w, "skip %s: %v\n", filepath.Base(f), err)
			}
			continue
		}
		for _, m := range g.Models() {
			if !seen[m.ID] {
				seen[m.ID] = true
				refs = append(refs, m)
			}
		}
	}
	return modelfile.SynthStore(dir, refs, scale, seed)
}
