package workflow

import (
	"bytes"
	"encoding/json"
	"sync/atomic"
)

// Counts says how often this process decoded a workflow's bytes and built a
// Graph. The kernel is meant to do each once per job, at submit (issue 19,
// "parse once"); the regression test in internal/node submits jobs through
// the API and checks these counters, so that a re-parse added anywhere on
// the job's path fails it. Counting costs one atomic add per call.
type Counts struct {
	// Decodes counts JSON decodes of a workflow (Parse, Decode) and any
	// other decode a caller reports with CountDecode.
	Decodes uint64
	// Graphs counts graphs built (FromMap, which Parse calls).
	Graphs uint64
}

var decodes, graphs atomic.Uint64

// ReadCounts returns the counters since the process started.
func ReadCounts() Counts { return Counts{Decodes: decodes.Load(), Graphs: graphs.Load()} }

// CountDecode records a decode of a workflow's bytes made outside this
// package (a job record read back from the store, a msgpack frame), so
// that ReadCounts sees every decode on a job's path.
func CountDecode() { decodes.Add(1) }

// Decode decodes a workflow's JSON into the map form FromMap takes, with
// numbers as json.Number. It checks no more than that the bytes are one
// JSON object; FromMap validates the graph.
func Decode(data []byte) (map[string]any, error) {
	decodes.Add(1)
	if m, ok := decodeObject(data); ok {
		return m, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
