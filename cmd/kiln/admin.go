package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"

	"github.com/kiln-gpu/kiln/kernel/config"
	"github.com/kiln-gpu/kiln/kernel/device"
	"github.com/kiln-gpu/kiln/kernel/logging"
	"github.com/kiln-gpu/kiln/kernel/modelfile"
	"github.com/kiln-gpu/kiln/kernel/workflow"
)

func cmdDevices(args []string) error {
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	addr := fs.String("addr", "", "kiln address; when kiln is not running, devices are opened locally")
	var cf configFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var out struct {
		Devices []device.Status `json:"devices"`
	}
	source := "kiln at " + newClient(*addr).base
	err := newClient(*addr).do(context.Background(), http.MethodGet, "/v1/devices", nil, &out)
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
		out.Devices = set.Describe()
		source = "local (kiln not running)"
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tNAME\tBACKEND\tMEMORY\tUSED\tRESERVED\tUSABLE\tUTIL\tTEMP\tHEALTH")
	for _, d := range out.Devices {
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
	tw.Flush()
	fmt.Fprintf(os.Stderr, "source: %s\n", source)
	return nil
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

func cmdConfig(args []string) error {
	if len(args) == 0 {
		return errors.New("config: want `print` or `validate FILE`")
	}
	switch args[0] {
	case "print":
		fs := flag.NewFlagSet("config print", flag.ContinueOnError)
		var cf configFlags
		cf.register(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		out, err := cfg.YAML()
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(out)
		return err
	case "validate":
		if len(args) != 2 {
			return errors.New("config validate: want exactly one FILE")
		}
		if err := config.ValidateFile(args[1]); err != nil {
			return err
		}
		fmt.Printf("%s: ok\n", args[1])
		return nil
	}
	return fmt.Errorf("config: unknown subcommand %q (want print or validate)", args[0])
}

func cmdModels(args []string) error {
	if len(args) == 0 || args[0] != "synth" {
		return errors.New("models: want `synth --dir DIR --from-workflows DIR [--scale F]`")
	}
	fs := flag.NewFlagSet("models synth", flag.ContinueOnError)
	dir := fs.String("dir", "", "model store to write into (ComfyUI models layout)")
	from := fs.String("from-workflows", "", "directory of API-format workflow JSON files")
	scale := fs.Float64("scale", defaultSynthScale, "file size as a fraction of the real model's size")
	seed := fs.Uint64("seed", 1, "seed for the files' deterministic content")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *dir == "" || *from == "" {
		return errors.New("models synth: --dir and --from-workflows are required")
	}
	written, err := synthStore(*dir, *from, *scale, *seed, os.Stdout)
	if err != nil {
		return err
	}
	var total int64
	for _, w := range written {
		total += w.Bytes
	}
	fmt.Printf("%d model files in %s (%.1f MiB)\n", len(written), *dir, float64(total)/(1<<20))
	return nil
}

// defaultSynthScale keeps the demo store at a few hundred MiB: the demo
// workflows name about 60 GB of real models.
const defaultSynthScale = 0.004

// synthStore writes a synthetic model for every model the workflows in dir
// name. Workflows that do not parse are reported and skipped.
func synthStore(dir, workflows string, scale float64, seed uint64, w *os.File) ([]modelfile.Written, error) {
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
	written, err := modelfile.SynthStore(dir, refs, scale, seed)
	if err != nil {
		return nil, err
	}
	if w != nil {
		for _, x := range written {
			b, _ := json.Marshal(x)
			fmt.Fprintln(w, string(b))
		}
	}
	return written, nil
}
