// Command kiln is the kiln daemon and its command-line client.
//
//	kiln serve --listen 127.0.0.1:8188 --data-dir ./data --models ./models
//	kiln submit workflow.json --class batch --wait
//	kiln jobs | kiln devices | kiln config print | kiln models synth ...
//	kiln demo      # what `make run` runs
package main

import (
	"fmt"
	"os"
)

// version is set by the Makefile through -ldflags.
var version = "dev"

const usage = `kiln — a GPU model-serving node kernel

usage:
  kiln serve    [--listen ADDR] [--data-dir DIR] [--models DIR] [--config FILE] [--set k=v]...
  kiln demo     [--jobs N] [--data-dir DIR] [--models DIR] [--workflows DIR] [--config FILE] [--set k=v]...
  kiln submit   FILE [--class interactive|batch] [--deadline-ms N] [--wait] [--addr URL]
  kiln jobs     [--state S] [--limit N] [--addr URL]
  kiln devices  [--addr URL] [--config FILE] [--set k=v]...
  kiln models   [list|refresh] [--addr URL] | synth --dir DIR --from-workflows DIR [--scale F] [--seed N]
  kiln policy   load FILE --kind K [--name N] | activate NAME[@V] | rollback KIND | list [--json]
                [--addr URL] [--token T]
  kiln sim      --trace F --models F [--config F] [--set k=v]... [--seed N] [--report json|md]
  kiln sim gen  --kind zipf|bursty|diurnal --out DIR ...
  kiln tune     --kind K --policy NAME [--budget N] [--objective O] [--no-canary] [--addr URL] [--token T]
  kiln experiment canary|ab|switchback --kind K --policy NAME [--steps 5,25,50,100] [--guard 'p95<=30s']...
                | list | show ID | abort ID  [--json] [--addr URL] [--token T]
  kiln config   print [--config FILE] [--set k=v]... | validate FILE
  kiln version

Client commands talk to $KILN_ADDR (default http://127.0.0.1:8188).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		err = cmdServe(args)
	case "demo":
		err = cmdDemo(args)
	case "submit":
		err = cmdSubmit(args)
	case "jobs":
		err = cmdJobs(args)
	case "devices":
		err = cmdDevices(args)
	case "models":
		if len(args) > 0 && args[0] == "synth" {
			err = cmdModels(args)
		} else {
			err = cmdModelsList(args)
		}
	case "policy":
		err = cmdPolicy(args)
	case "sim":
		err = cmdSim(args)
	case "tune":
		err = cmdTune(args)
	case "experiment", "experiments":
		err = cmdExperiment(args)
	case "config":
		err = cmdConfig(args)
	case "version", "--version":
		fmt.Println("kiln", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "kiln: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiln:", err)
		if ec, ok := err.(exitCoder); ok {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

// exitCoder lets a command choose its exit status (e.g. submit --wait on a
// failed job).
type exitCoder interface{ ExitCode() int }

type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) ExitCode() int { return e.code }
