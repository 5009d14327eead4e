package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
)

const completionHelp = `usage: kiln completion bash|zsh|fish

Prints a shell completion script. The script asks kiln itself for the
candidates (commands, subcommands, and each command's flags from its
--help), so it stays right as kiln changes. Install it with:

  bash:  kiln completion bash > /etc/bash_completion.d/kiln
         (or: source <(kiln completion bash) in ~/.bashrc)
  zsh:   kiln completion zsh > "${fpath[1]}/_kiln"
         (or: source <(kiln completion zsh) in ~/.zshrc, after compinit)
  fish:  kiln completion fish > ~/.config/fish/completions/kiln.fish
`

const bashCompletion = `# bash completion for kiln (kiln completion bash)
_kiln() {
    local cur words
    cur="${COMP_WORDS[COMP_CWORD]}"
    words=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" __complete "${words[@]}" -- "$cur" 2>/dev/null)" -- "$cur"))
}
complete -o default -o bashdefault -F _kiln kiln
`

const zshCompletion = `#compdef kiln
# zsh completion for kiln (kiln completion zsh)
_kiln() {
    local -a candidates
    candidates=("${(@f)$("${words[1]}" __complete "${(@)words[2,CURRENT-1]}" -- "${words[CURRENT]}" 2>/dev/null)}")
    if (( ${#candidates[@]} )) && [[ -n "${candidates[1]}" ]]; then
        compadd -a candidates
    else
        _files
    fi
}
if [ "$funcstack[1]" = "_kiln" ]; then
    _kiln "$@"
else
    compdef _kiln kiln
fi
`

const fishCompletion = `# fish completion for kiln (kiln completion fish)
function __kiln_complete
    set -l words (commandline -opc)
    set -e words[1]
    kiln __complete $words -- (commandline -ct) 2>/dev/null
end
complete -c kiln -a '(__kiln_complete)'
`

func cmdCompletion(args []string) error {
	fs := newFlags("completion", completionHelp)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("completion", "want one shell: bash, zsh or fish")
	}
	switch pos[0] {
	case "bash":
		fmt.Print(bashCompletion)
	case "zsh":
		fmt.Print(zshCompletion)
	case "fish":
		fmt.Print(fishCompletion)
	default:
		return usagef("completion", "unknown shell %q: want bash, zsh or fish", pos[0])
	}
	return nil
}

// cmdComplete is `kiln __complete WORD... -- CURRENT`, which the scripts
// call: it prints the candidates for CURRENT, one a line (none: the shell
// completes file names).
func cmdComplete(args []string) error {
	words, cur := args, ""
	for i, a := range args {
		if a == "--" {
			words = args[:i]
			if i+1 < len(args) {
				cur = args[i+1]
			}
			break
		}
	}
	for _, c := range completions(words, cur) {
		fmt.Println(c)
	}
	return nil
}

// completions is the candidates for the word cur after words.
func completions(words []string, cur string) []string {
	var out []string
	add := func(s string) {
		if strings.HasPrefix(s, cur) {
			out = append(out, s)
		}
	}
	if len(words) == 0 {
		if strings.HasPrefix(cur, "-") {
			add("--help")
			add("--version")
			return out
		}
		for _, c := range table {
			if !c.hidden {
				add(c.name)
			}
		}
		return out
	}
	c := find(words[0])
	if c == nil || c.hidden {
		return nil
	}
	var positional []string
	for _, w := range words[1:] {
		if !strings.HasPrefix(w, "-") {
			positional = append(positional, w)
		}
	}
	if strings.HasPrefix(cur, "-") {
		helpArgs := append([]string{}, positional...)
		if len(helpArgs) > 1 {
			helpArgs = helpArgs[:1]
		}
		if len(c.subs) == 0 || len(helpArgs) > 0 && !contains(c.subs, helpArgs[0]) {
			helpArgs = nil
		}
		for _, f := range flagsOf(c, helpArgs) {
			add(f)
		}
		return out
	}
	if len(words) > 1 {
		if vals, ok := flagValues[words[len(words)-1]]; ok {
			for _, v := range vals {
				add(v)
			}
			return out
		}
	}
	if len(c.subs) > 0 && len(positional) == 0 {
		for _, s := range c.subs {
			add(s)
		}
	}
	return out
}

// flagValues are the values of the flags that take one of a known set.
var flagValues = map[string][]string{
	"-o":       {"table", "json", "yaml"},
	"--output": {"table", "json", "yaml"},
	"--class":  {"interactive", "batch"},
	"--kind":   {"eviction", "scheduling", "batching", "balancing", "routing"},
	"--state":  jobStates,
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var flagName = regexp.MustCompile(`(?m)(?:^|[\s\[,|(])(--[a-z][a-z0-9-]*)`)

// flagsOf runs `kiln CMD [SUB] --help` here, its help captured, and picks
// the --flags out of it.
func flagsOf(c *command, sub []string) []string {
	help := captureStdout(func() { _ = c.run(append(sub, "--help")) })
	seen := map[string]bool{}
	var out []string
	for _, m := range flagName.FindAllStringSubmatch(help, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	sort.Strings(out)
	return out
}

// captureStdout runs f with os.Stdout sent to a buffer.
func captureStdout(f func()) string {
	r, w, err := os.Pipe()
	if err != nil {
		return ""
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r)
		done <- b.Bytes()
	}()
	defer func() {
		os.Stdout = old
	}()
	f()
	w.Close()
	out := <-done
	r.Close()
	return string(out)
}
