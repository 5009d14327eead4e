package main

// The command and flag layer every kiln command uses: flags in any position
// (before, between or after positional arguments; "--" ends them), --help
// and -h on every command and subcommand (exit 0, help on stdout), a wrong
// flag or argument said once with a pointer to --help (exit 2), and the
// -o/--output flag of every command that prints data. It is the standard
// library's flag package with a reordering step in front of it, so that a
// command stays a flag.FlagSet and a function.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one `kiln NAME`: main.go's table lists them, and the usage
// text, `kiln help`, dispatch and shell completion all come from it.
type command struct {
	name    string
	aliases []string
	args    string   // the synopsis after the name, for the usage text
	summary string   // one line
	subs    []string // subcommands, for completion
	run     func(args []string) error
	hidden  bool // not listed (e.g. __complete)
}

// Exit statuses, as the usage text and docs say.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a wrong flag, argument or subcommand: main prints it once
// with a pointer to --help and exits 2.
type usageError struct {
	cmd string // "submit", "policy load"
	msg string
}

func (e *usageError) Error() string {
	if e.cmd == "" {
		return e.msg + "\nRun 'kiln --help' for usage."
	}
	return e.msg + "\nRun 'kiln " + e.cmd + " --help' for usage."
}
func (e *usageError) ExitCode() int { return exitUsage }

// usagef returns a usage error of command cmd.
func usagef(cmd, format string, a ...any) error {
	return &usageError{cmd: cmd, msg: "kiln " + cmd + ": " + fmt.Sprintf(format, a...)}
}

// isHelp reports whether a is a request for help.
func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" || a == "help" }

// cmdFlags is a command's flag set.
type cmdFlags struct {
	*flag.FlagSet
	name  string            // "submit", "policy load"
	help  string            // printed before the flags by --help
	short map[string]string // long name → one-letter alias
	out   *output
	// helpOut is where --help writes (stdout; tests swap it).
	helpOut io.Writer
}

// newFlags makes the flag set of `kiln NAME`; help is its usage text
// ("usage: kiln NAME ..." and a description), printed above the flags.
func newFlags(name, help string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, and said once by main
	fs.Usage = func() {}
	return &cmdFlags{FlagSet: fs, name: name, help: help, short: map[string]string{}}
}

// alias makes -s another name of the flag --long.
func (f *cmdFlags) alias(s, long string) {
	fl := f.Lookup(long)
	if fl == nil {
		panic("alias of undefined flag " + long)
	}
	f.Var(fl.Value, s, fl.Usage)
	f.short[long] = s
}

// parse parses args, flags anywhere, and returns the positional arguments.
// --help prints the help and returns flag.ErrHelp (main exits 0); a bad
// flag returns a *usageError.
func (f *cmdFlags) parse(args []string) ([]string, error) {
	flags, pos := f.reorder(args)
	if err := f.FlagSet.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.printHelp(f.helpWriter())
			return nil, flag.ErrHelp
		}
		return nil, &usageError{cmd: f.name, msg: "kiln " + f.name + ": " + strings.Replace(err.Error(), " -", " --", 1)}
	}
	pos = append(pos, f.Args()...)
	if f.out != nil {
		if err := f.out.check(); err != nil {
			return nil, &usageError{cmd: f.name, msg: "kiln " + f.name + ": " + err.Error()}
		}
	}
	return pos, nil
}

func (f *cmdFlags) helpWriter() io.Writer {
	if f.helpOut != nil {
		return f.helpOut
	}
	return os.Stdout
}

// reorder moves the flags (and the values of flags that take one) in front
// of the positional arguments, so that `submit --class batch FILE --wait`
// parses as `submit --class batch --wait FILE`. Everything after "--" is
// positional.
func (f *cmdFlags) reorder(args []string) (flags, pos []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		fl := f.Lookup(name)
		if fl == nil {
			continue // Parse says it is not defined
		}
		if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return flags, pos
}

// printHelp writes the command's usage text and its flags, spelt --flag.
func (f *cmdFlags) printHelp(w io.Writer) {
	help := f.help
	if help == "" {
		help = "usage: kiln " + f.name + " [flags]\n"
	}
	fmt.Fprint(w, strings.TrimRight(help, "\n")+"\n\nflags:\n")
	aliases := map[string]bool{}
	for _, s := range f.short {
		aliases[s] = true
	}
	type row struct{ left, usage string }
	var rows []row
	width := 0
	f.VisitAll(func(fl *flag.Flag) {
		if aliases[fl.Name] {
			return
		}
		left := "--" + fl.Name
		if s, ok := f.short[fl.Name]; ok {
			left = "-" + s + ", " + left
		} else {
			left = "    " + left
		}
		name, usage := flag.UnquoteUsage(fl)
		if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); !(ok && b.IsBoolFlag()) && name != "" {
			left += " " + name
		}
		switch fl.DefValue {
		case "", "0", "false", "[]", "0s":
		default:
			if !strings.Contains(usage, "default") {
				usage += fmt.Sprintf(" (default %s)", fl.DefValue)
			}
		}
		width = max(width, len(left))
		rows = append(rows, row{left, usage})
	})
	rows = append(rows, row{"-h, --help", "show this help"})
	width = max(width, len("-h, --help"))
	sort.SliceStable(rows, func(i, j int) bool {
		return strings.TrimLeft(rows[i].left, " -") < strings.TrimLeft(rows[j].left, " -")
	})
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s  %s\n", width, r.left, r.usage)
	}
}

// table is main.go's commands, set by init: the commands' own functions
// (help, completion) look commands up through it.
var table []command

func init() { table = commands }

// find returns the command called name (or one of its aliases).
func find(name string) *command {
	for i := range table {
		c := &table[i]
		if c.name == name {
			return c
		}
		for _, a := range c.aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

// usageText is `kiln --help`: the commands of main.go's table, the
// conventions every command follows, and the exit statuses.
func usageText() string {
	var b strings.Builder
	b.WriteString("kiln — a GPU model-serving node kernel\n\nusage: kiln COMMAND [ARGS] [FLAGS]\n\n")
	width := 0
	for _, c := range table {
		if !c.hidden {
			width = max(width, len(c.name))
		}
	}
	b.WriteString("commands:\n")
	for _, c := range table {
		if !c.hidden {
			fmt.Fprintf(&b, "  %-*s  %s\n", width, c.name, c.summary)
		}
	}
	b.WriteString("\nsynopsis:\n")
	for _, c := range table {
		if c.hidden || c.args == "" {
			continue
		}
		for i, line := range strings.Split(c.args, "\n") {
			if i == 0 {
				fmt.Fprintf(&b, "  kiln %-*s %s\n", width, c.name, line)
			} else {
				fmt.Fprintf(&b, "       %-*s %s\n", width, "", line)
			}
		}
	}
	b.WriteString(`
Flags go anywhere after the command, before or after its arguments ("--"
ends them); every command and subcommand takes --help (-h). Commands that
print data take -o/--output table|json|yaml (--json is -o json). Client
commands talk to --addr URL, else $KILN_ADDR, else http://127.0.0.1:8188.

Exit status: 0 success; 1 failure (an error, a failed job, an API error);
2 usage (an unknown command, flag or argument); 130 interrupted (Ctrl-C
during a --wait that left the job running). kiln experiment --wait adds 3
(rolled back) and 4 (inconclusive).

Run 'kiln COMMAND --help' for a command's flags. Shell completion: kiln
completion bash|zsh|fish.
`)
	return b.String()
}
