package job

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// A job's stored record is its JSON (Job's field tags), written by
// appendRecord rather than json.Marshal, for two reasons:
//
//   - The workflow is spliced in as it is. json.Marshal checks and
//     compacts a json.RawMessage byte by byte, which at every submit and
//     every transition re-did what the API's decode had done (about a
//     tenth of a durable submit's CPU).
//   - The workflow is the record's last member, so the store knows where
//     it lies (liveJob.wfAt) and a transition builds the job's next record
//     from what it keeps in memory and those bytes, without decoding the
//     record it replaces.
//
// json.Unmarshal reads any member order, so records written by
// json.Marshal (kiln before this layout, recovery's fallback) and by
// appendRecord decode alike; TestRecordDecodesAsMarshal checks that they
// decode to the same job.

// workflowKey precedes the workflow, the record's last member.
const workflowKey = `,"workflow":`

// encodeRecord returns j's record and the offset of its workflow in it.
// The workflow must be one JSON value (a job with Facts was parsed from
// it; Submit checks any other); the rest is encoded here, through
// json.Marshal for the rare value that needs escaping or a check.
func encodeRecord(j *Job) (data []byte, wfAt int, err error) {
	n := 256 + len(j.Workflow) + len(j.ID) + len(j.Tenant) + len(j.ClientID) + len(j.Worker) + len(j.Error)
	for _, m := range j.Models {
		n += len(m) + 3
	}
	for _, o := range j.Outputs {
		n += 64 + len(o.Node) + len(o.Filename) + len(o.Subfolder) + len(o.Type)
	}
	for _, id := range j.OutputNodes {
		n += len(id) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, `{"id":`...)
	b = appendString(b, j.ID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, j.Seq, 10)
	b = append(b, `,"class":`...)
	b = appendString(b, string(j.Class))
	b = append(b, `,"state":`...)
	b = appendString(b, string(j.State))
	if j.Order != nil {
		b = append(b, `,"order":`...)
		if b, err = appendFloat(b, *j.Order); err != nil {
			return nil, 0, err
		}
	}
	if j.Front {
		b = append(b, `,"front":true`...)
	}
	b = append(b, `,"models":`...)
	b = appendStrings(b, j.Models)
	if j.DeadlineMS != 0 {
		b = append(b, `,"deadline_ms":`...)
		b = strconv.AppendInt(b, j.DeadlineMS, 10)
	}
	if j.Tenant != "" {
		b = append(b, `,"tenant":`...)
		b = appendString(b, j.Tenant)
	}
	if j.ClientID != "" {
		b = append(b, `,"client_id":`...)
		b = appendString(b, j.ClientID)
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(j.Attempts), 10)
	if j.Preemptions != 0 {
		b = append(b, `,"preemptions":`...)
		b = strconv.AppendInt(b, int64(j.Preemptions), 10)
	}
	b = append(b, `,"created_at":`...)
	if b, err = appendTime(b, j.CreatedAt); err != nil {
		return nil, 0, err
	}
	if !j.StartedAt.IsZero() {
		b = append(b, `,"started_at":`...)
		if b, err = appendTime(b, j.StartedAt); err != nil {
			return nil, 0, err
		}
	}
	if !j.FinishedAt.IsZero() {
		b = append(b, `,"finished_at":`...)
		if b, err = appendTime(b, j.FinishedAt); err != nil {
			return nil, 0, err
		}
	}
	if j.Worker != "" {
		b = append(b, `,"worker":`...)
		b = appendString(b, j.Worker)
	}
	if len(j.Outputs) > 0 {
		b = append(b, `,"outputs":[`...)
		for i, o := range j.Outputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"node":`...)
			b = appendString(b, o.Node)
			b = append(b, `,"filename":`...)
			b = appendString(b, o.Filename)
			b = append(b, `,"subfolder":`...)
			b = appendString(b, o.Subfolder)
			b = append(b, `,"type":`...)
			b = appendString(b, o.Type)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if j.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, j.Error)
	}
	if len(j.OutputNodes) > 0 {
		b = append(b, `,"output_nodes":`...)
		b = appendStrings(b, j.OutputNodes)
	}
	b = append(b, workflowKey...)
	wfAt = len(b)
	if len(j.Workflow) == 0 {
		b = append(b, "null"...) // json.RawMessage(nil) marshals so
	} else {
		b = append(b, j.Workflow...)
	}
	return append(b, '}'), wfAt, nil
}

// workflowOf returns the workflow of a record written by encodeRecord,
// whose workflow starts at wfAt, and whether the record has that shape
// (a record written by json.Marshal, or an offset that is not this
// record's, gives false).
func workflowOf(data []byte, wfAt int) (json.RawMessage, bool) {
	if wfAt < len(`{`+workflowKey) || wfAt >= len(data) || data[len(data)-1] != '}' ||
		string(data[wfAt-len(workflowKey):wfAt]) != workflowKey {
		return nil, false
	}
	// A null workflow comes back as "null", as json.Unmarshal gives it.
	return data[wfAt : len(data)-1], true
}

// workflowAtOf returns where the workflow of record data, decoded as j,
// starts when the record has encodeRecord's shape, else 0: a record
// written by json.Marshal (an older kiln) has members after it.
func workflowAtOf(data []byte, j *Job) int {
	wf := []byte(j.Workflow)
	if len(wf) == 0 {
		wf = []byte("null")
	}
	at := len(data) - 1 - len(wf)
	if at <= 0 || !bytes.Equal(data[at:len(data)-1], wf) {
		return 0
	}
	if _, ok := workflowOf(data, at); !ok {
		return 0
	}
	return at
}

// appendString appends s as json.Marshal writes it: printable ASCII
// without the characters it escapes goes as it is, anything else through
// json.Marshal (quotes, backslashes, <, >, & for HTML, control
// characters, invalid UTF-8).
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendStrings appends ss as json.Marshal writes a []string (null when
// nil).
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendFloat appends f as json.Marshal writes a float64.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		_, err := json.Marshal(f) // the error json.Marshal gives
		return nil, err
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// json.Marshal writes 1e-07 as 1e-7.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// appendTime appends t as json.Marshal writes a time.Time (RFC 3339 with
// nanoseconds). The store's times are UTC; any other, or a year outside
// 0–9999, goes through MarshalJSON, which refuses what RFC 3339 cannot say.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); t.Location() != time.UTC || y < 0 || y > 9999 {
		q, err := t.MarshalJSON()
		if err != nil {
			return nil, err
		}
		return append(b, q...), nil
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}
