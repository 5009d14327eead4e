// Command kiln is the kiln daemon and its command-line client.
//
//	kiln serve --config /etc/kiln/kiln.yaml
//	kiln submit workflow.json --class batch --wait
//	kiln jobs -o json | kiln cancel ID | kiln devices | kiln config print
//	kiln demo      # what `make run` runs
//
// Commands are the rows of the table below (cli.go has the flag layer):
// adding one is one row here and a func(args []string) error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// commands is every `kiln NAME`, in the order `kiln --help` lists them.
var commands = []command{
	{name: "serve", summary: "run the daemon", run: cmdServe,
		args: "[--config FILE] [--listen ADDR] [--data-dir DIR] [--models DIR] [--set k=v]..."},
	{name: "demo", summary: "run a node with a demo workload (make run)", run: cmdDemo,
		args: "[--jobs N] [--data-dir DIR] [--models DIR] [--workflows DIR] [--config FILE] [--set k=v]..."},
	{name: "submit", summary: "submit a workflow, optionally waiting for its result", run: cmdSubmit,
		args: "FILE [--class interactive|batch] [--deadline-ms N] [--wait [--cancel-on-interrupt]]"},
	{name: "jobs", summary: "list jobs, or show one (jobs show ID)", run: cmdJobs, subs: []string{"list", "show"},
		args: "[list] [--state S] [--limit N] | show ID..."},
	{name: "cancel", summary: "cancel queued or running jobs", run: cmdCancel, args: "ID..."},
	{name: "logs", summary: "a job's timeline; --follow until it ends", run: cmdLogs, args: "ID [--follow]"},
	{name: "events", summary: "follow the node's job events (WebSocket)", run: cmdEvents, args: "[--job ID] [--count N]"},
	{name: "devices", summary: "the GPUs (from kiln, or opened here when it is not running)", run: cmdDevices,
		args: "[--config FILE] [--set k=v]..."},
	{name: "workers", summary: "the worker processes", run: cmdWorkers},
	{name: "models", summary: "the model catalog; synth writes a synthetic store", run: cmdModels,
		subs: []string{"list", "refresh", "synth"},
		args: "[list|refresh] | synth --dir DIR --from-workflows DIR [--scale F] [--seed N]"},
	{name: "policy", aliases: []string{"policies"}, summary: "load, activate, roll back and list policies", run: cmdPolicy,
		subs: []string{"load", "activate", "rollback", "unload", "set", "list", "test"},
		args: "load FILE --kind K [--name N] | activate NAME[@V] | rollback KIND | list | ... [--token T]"},
	{name: "experiment", aliases: []string{"experiments"}, summary: "canaries, A/B tests and switchbacks of policies",
		run: cmdExperiment, subs: []string{"canary", "ab", "switchback", "list", "show", "abort", "shadow"},
		args: "canary|ab|switchback --kind K --policy NAME [--guard 'p95<=30s']... | list | show ID | abort ID"},
	{name: "tune", summary: "search a policy's parameters on recorded traffic", run: cmdTune, subs: []string{"status"},
		args: "--kind K --policy NAME [--budget N] [--objective O] [--no-canary] | status"},
	{name: "nats", summary: "run a NATS JetStream server for a kiln cluster", run: cmdNATS,
		args: "--port P --cluster-port Q --routes nats://H:Q2,nats://H:Q3 --store-dir DIR"},
	{name: "sim", summary: "the trace-driven simulator", run: cmdSim, subs: []string{"gen", "bench"},
		args: "--trace F --models F [--report json|md] | gen --kind zipf|bursty|diurnal --out DIR | bench"},
	{name: "config", summary: "print the effective config, or validate a file", run: cmdConfig, subs: []string{"print", "validate"},
		args: "print [--config FILE] [--set k=v]... | validate FILE"},
	{name: "completion", summary: "print a shell completion script", run: cmdCompletion, subs: []string{"bash", "zsh", "fish"},
		args: "bash|zsh|fish"},
	{name: "version", summary: "print kiln's version and build", run: cmdVersion},
	{name: "help", summary: "help on kiln or a command", run: cmdHelp, args: "[COMMAND]"},
	{name: "__complete", hidden: true, run: cmdComplete},
}

func main() {
	os.Exit(run(os.Args[1:]))
}

// run dispatches one command line and returns the exit status.
func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usageText())
		return exitUsage
	}
	name := args[0]
	var c *command
	switch {
	case isHelp(name):
		fmt.Print(usageText())
		return exitOK
	case name == "--version":
		c = find("version")
	default:
		c = find(name)
	}
	if c == nil {
		fmt.Fprintln(os.Stderr, (&usageError{msg: fmt.Sprintf("kiln: unknown command %q", name)}).Error())
		return exitUsage
	}
	return exitStatus(c.run(args[1:]))
}

// exitStatus says err once on stderr and maps it to an exit status.
func exitStatus(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, ue.Error())
		return exitUsage
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "kiln:", msg)
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return exitFailure
}

// cmdHelp is `kiln help [COMMAND]`.
func cmdHelp(args []string) error {
	if len(args) == 0 {
		fmt.Print(usageText())
		return nil
	}
	c := find(args[0])
	if c == nil {
		return usagef("help", "unknown command %q", args[0])
	}
	return c.run(append(args[1:], "--help"))
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
