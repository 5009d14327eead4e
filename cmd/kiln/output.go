package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// output is the -o/--output flag of a command that prints data: table (the
// human view), json or yaml (the same fields as the API's JSON, by their
// JSON names). --json is -o json, kept from before -o existed.
type output struct {
	format string
	def    string
}

// output registers -o/--output and --json; def is the format without
// them ("table", or "yaml" for config print).
func (f *cmdFlags) output(def string) *output {
	o := &output{format: def, def: def}
	f.StringVar(&o.format, "output", def, "`FORMAT` of the output: table, json or yaml")
	f.alias("o", "output")
	f.BoolFunc("json", "same as --output json", func(string) error { o.format = "json"; return nil })
	f.out = o
	return o
}

func (o *output) check() error {
	switch o.format {
	case "table", "json", "yaml":
		return nil
	case "wide", "text":
		o.format = "table"
		return nil
	}
	return fmt.Errorf("--output %q: want table, json or yaml", o.format)
}

// structured reports whether the output is JSON or YAML.
func (o *output) structured() bool { return o != nil && (o.format == "json" || o.format == "yaml") }

// print writes v as JSON or YAML, or calls table for the human view.
func (o *output) print(v any, table func(w io.Writer) error) error {
	return o.write(os.Stdout, v, table)
}

func (o *output) write(w io.Writer, v any, table func(w io.Writer) error) error {
	switch o.format {
	case "json":
		return writeJSON(w, v)
	case "yaml":
		return writeYAML(w, v)
	}
	return table(w)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeYAML writes v as YAML with its JSON names and in its JSON order:
// it goes through JSON, which YAML reads, and drops JSON's flow style.
func writeYAML(w io.Writer, v any) error {
	var data []byte
	switch x := v.(type) {
	case json.RawMessage:
		data = x
	case []byte:
		data = x
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			return err
		}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// blockStyle clears the flow and quoting styles a JSON document parses
// with; the encoder quotes again whatever would not read back the same.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}
