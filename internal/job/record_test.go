package job

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kiln-gpu/kiln/internal/workflow"
)

// recordJobs are jobs with every field set, empty, or holding what
// encodeRecord must hand to json.Marshal (escapes, HTML characters,
// non-ASCII, invalid UTF-8, extreme floats, a non-UTC time).
func recordJobs() []*Job {
	order := func(f float64) *float64 { return &f }
	full := &Job{
		ID: "0195519-abc_de:f.1", Seq: math.MaxUint64, Class: Interactive, State: Done, Order: order(-1.5), Front: true,
		Workflow: json.RawMessage(`{"1":{"class_type":"SaveImage","inputs":{"t":"<b> & \"q\" \u00e9"}}}`),
		Models:   []string{"checkpoints/a.safetensors", "loras/b <c>.safetensors"}, DeadlineMS: 1500,
		Tenant: "tenant \"t\"", ClientID: "client é", Attempts: 3, Preemptions: 1,
		CreatedAt: t0, StartedAt: t0.Add(time.Second + 5*time.Nanosecond), FinishedAt: t0.Add(time.Minute),
		Worker: "w0", Outputs: []Output{{Node: "9", Filename: "a&b.png", Subfolder: "", Type: "output"}, {Node: "10", Filename: "c.png"}},
		Error: "line 1\nline 2\t\x01 \xff", OutputNodes: []string{"9", "10"},
	}
	var jobs []*Job
	jobs = append(jobs, full, &Job{}, &Job{ID: "x", Workflow: json.RawMessage(`null`), Models: []string{}})
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -3, 1e-7, 1e-6, 123456789.125, 1e20, 1e21, 1.5e300, -2.5e-300, math.SmallestNonzeroFloat64} {
		j := *full
		j.Order = order(f)
		jobs = append(jobs, &j)
	}
	est := *full
	est.CreatedAt = t0.In(time.FixedZone("EST", -5*3600))
	jobs = append(jobs, &est)
	return jobs
}

// TestRecordDecodesAsMarshal checks that a record encodeRecord writes
// decodes to the job json.Marshal's record of it decodes to, and that it
// ends with the workflow at the offset it reports.
func TestRecordDecodesAsMarshal(t *testing.T) {
	for i, j := range recordJobs() {
		checkRecord(t, i, j)
	}
}

func checkRecord(t *testing.T, i int, j *Job) {
	t.Helper()
	want, werr := json.Marshal(j)
	got, wfAt, gerr := encodeRecord(j)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("job %d: encodeRecord error %v; json.Marshal error %v", i, gerr, werr)
	}
	if werr != nil {
		return
	}
	var a, b Job
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("job %d: record %s does not decode: %v", i, got, err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		t.Fatal(err)
	}
	// The workflow goes in verbatim; json.Marshal escapes <, > and & in
	// it for HTML, which decodes to the same graph.
	wf, ok := workflowOf(got, wfAt)
	if !ok || string(wf) != string(j.Workflow) && !(string(wf) == "null" && len(j.Workflow) == 0) {
		t.Errorf("job %d: workflow at %d = %q, %v; want %q", i, wfAt, wf, ok, j.Workflow)
	}
	if at := workflowAtOf(got, &a); at != wfAt {
		t.Errorf("job %d: workflowAtOf = %d; want %d", i, at, wfAt)
	}
	a.Workflow = htmlEscaped(a.Workflow)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("job %d: record %s decodes to\n%+v; json.Marshal's %s to\n%+v", i, got, a, want, b)
	}
	if at := workflowAtOf(want, &b); at != 0 && len(b.Outputs)+len(b.Models) > 0 {
		t.Errorf("job %d: workflowAtOf(json.Marshal's record) = %d; want 0 (members follow the workflow)", i, at)
	}
}

// htmlEscaped is raw as json.Marshal writes a json.RawMessage.
func htmlEscaped(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	var buf bytes.Buffer
	json.HTMLEscape(&buf, raw)
	return buf.Bytes()
}

// FuzzRecord checks encodeRecord against json.Marshal on jobs built from
// arbitrary strings and numbers.
func FuzzRecord(f *testing.F) {
	f.Add("id", "tenant <&>", "err \x00 \xff", "checkpoints/é.safetensors", 1.5, int64(12), true)
	f.Add("", "", "", "", 0.0, int64(0), false)
	f.Fuzz(func(t *testing.T, id, tenant, errText, model string, order float64, n int64, front bool) {
		j := &Job{ID: id, Seq: uint64(n), Class: Class(tenant), State: State(id), Order: &order, Front: front,
			Workflow: json.RawMessage(`{"a":[1,2,{"b":"c"}]}`), Models: []string{model, id}, DeadlineMS: n,
			Tenant: tenant, ClientID: model, Attempts: int(n % 100), CreatedAt: t0.Add(time.Duration(n)),
			Worker: errText, Outputs: []Output{{Node: id, Filename: model, Subfolder: tenant, Type: errText}},
			Error: errText, OutputNodes: []string{errText}}
		checkRecord(t, 0, j)
	})
}

// parsedGraph is a workflow that parses: its jobs carry Facts.
const parsedGraph = `{"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":"v1-5.safetensors"}},` +
	`"5":{"class_type":"EmptyLatentImage","inputs":{"width":512,"height":512,"batch_size":1}},` +
	`"6":{"class_type":"CLIPTextEncode","inputs":{"text":"a <cat> & \u00e9","clip":["4",1]}},` +
	`"3":{"class_type":"KSampler","inputs":{"seed":1,"steps":4,"cfg":7,"sampler_name":"euler","scheduler":"normal","denoise":1,` +
	`"model":["4",0],"positive":["6",0],"negative":["6",0],"latent_image":["5",0]}},` +
	`"8":{"class_type":"VAEDecode","inputs":{"samples":["3",0],"vae":["4",2]}},` +
	`"9":{"class_type":"SaveImage","inputs":{"filename_prefix":"x","images":["8",0]}}}`

func submitGraph(t *testing.T, s *Store, class Class) *Job {
	t.Helper()
	j := &Job{Class: class, Workflow: json.RawMessage(parsedGraph), Models: []string{"checkpoints/v1-5.safetensors"}}
	if err := s.Submit(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	if j.Facts == nil {
		t.Fatal("a job submitted without Facts got none: the store did not parse its workflow")
	}
	return j
}

// TestTransitionsDecodeNoRecord counts the stored records decoded over
// jobs' whole lives, every transition included: none. The committer builds
// each job's next record from what it keeps in memory and the workflow's
// bytes; a transition that decodes the record it replaces again fails
// this test. The jobs' workflows are parsed once each, at submit.
func TestTransitionsDecodeNoRecord(t *testing.T) {
	s, path, _ := openTest(t, Config{MaxAttempts: 5})
	recs0, _ := ReadCounts()
	wf0 := workflow.ReadCounts()
	var jobs []*Job
	for i := range 6 {
		jobs = append(jobs, submitGraph(t, s, []Class{Interactive, Batch}[i%2]))
	}
	lives := []func(id string) (*Job, error){
		func(id string) (*Job, error) { // start, finish
			must(t)(s.Start(id, "w"))
			return s.Finish(id, []Output{{Node: "9", Filename: "a.png"}})
		},
		func(id string) (*Job, error) { // lost, preempted, then failed
			must(t)(s.Start(id, "w"))
			must(t)(s.Requeue(id, "died"))
			must(t)(s.Start(id, "w"))
			must(t)(s.Preempt(id))
			must(t)(s.Start(id, "w"))
			return s.Fail(id, "bad")
		},
		func(id string) (*Job, error) { return s.Cancel(id) }, // cancelled while queued
		func(id string) (*Job, error) { // cancelled while running
			must(t)(s.Start(id, "w"))
			return s.Cancel(id)
		},
		func(id string) (*Job, error) { return s.Fail(id, "no room") }, // failed while queued
		func(id string) (*Job, error) { // left running
			return s.Start(id, "w")
		},
	}
	for i, j := range jobs {
		got, err := lives[i](j.ID)
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
		if string(got.Workflow) != parsedGraph || got.Facts == nil || !slices.Equal(got.Models, j.Models) || got.CreatedAt != j.CreatedAt {
			t.Errorf("job %d as committed: %+v; want its workflow, Facts, models and creation time", i, got)
		}
		if got.State.terminal() && !slices.Equal(got.OutputNodes, []string{"9"}) {
			t.Errorf("job %d ended with OutputNodes %v; want [9] (its Facts' outputs)", i, got.OutputNodes)
		}
	}
	// Two jobs' lives in one batch: submitted and started before the
	// committer runs, as the dispatcher can.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := submitGraph(t, s, Batch)
			if _, err := s.Start(j.ID, "w"); err != nil {
				t.Error(err)
			} else if _, err := s.Finish(j.ID, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if recs, _ := ReadCounts(); recs != recs0 {
		t.Errorf("%d stored records decoded over the jobs' lives; want 0", recs-recs0)
	}
	if wf := workflow.ReadCounts(); wf.Decodes-wf0.Decodes != 14 || wf.Graphs-wf0.Graphs != 14 {
		t.Errorf("%d workflow decodes and %d graphs for 14 jobs; want one each, at submit", wf.Decodes-wf0.Decodes, wf.Graphs-wf0.Graphs)
	}
	// Reopened, the running job is queued again: recovery decodes each
	// unfinished record once and rewrites the running one, and its next
	// transitions decode nothing.
	s2 := reopen(t, s, path, Config{MaxAttempts: 5})
	recs1, _ := ReadCounts()
	last := jobs[5].ID
	must(t)(s2.Start(last, "w"))
	if j, err := s2.Finish(last, nil); err != nil || string(j.Workflow) != parsedGraph || j.Facts == nil {
		t.Fatalf("Finish after reopen: %+v, %v", j, err)
	}
	if recs, _ := ReadCounts(); recs != recs1 {
		t.Errorf("%d records decoded by a recovered job's transitions; want 0", recs-recs1)
	}
}

// TestTransitionOfAnOlderRecord checks that a job whose record an older
// kiln wrote (json.Marshal's member order, the workflow not last) still
// moves: the committer decodes that record once instead of splicing, and
// from then on the record has the new shape.
func TestTransitionOfAnOlderRecord(t *testing.T) {
	s, path, _ := openTest(t, Config{})
	j := submitGraph(t, s, Batch)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := *j
	old.Facts = nil
	data, err := json.Marshal(&old)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketJobs).Put([]byte(j.ID), data) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := reopen(t, s, path, Config{})
	recs0, _ := ReadCounts()
	started, err := s2.Start(j.ID, "w")
	// The older record has the workflow as json.Marshal wrote it.
	escaped := string(htmlEscaped(json.RawMessage(parsedGraph)))
	if err != nil || string(started.Workflow) != escaped || started.Facts == nil || started.Seq != j.Seq {
		t.Fatalf("Start of an older record: %+v, %v", started, err)
	}
	if _, err := s2.Finish(j.ID, nil); err != nil {
		t.Fatal(err)
	}
	if recs, _ := ReadCounts(); recs-recs0 != 1 {
		t.Errorf("%d records decoded; want 1 (the older record, once)", recs-recs0)
	}
	if got := mustGet(t, s2, j.ID); got.State != Done || string(got.Workflow) != escaped {
		t.Errorf("after Finish: %+v", got)
	}
}

// TestSubmitChecksAWorkflowWithoutFacts checks that Submit still refuses a
// workflow that is not JSON when the caller hands over no Facts (the
// record carries the workflow verbatim), with json.Marshal's error.
func TestSubmitChecksAWorkflowWithoutFacts(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	for _, wf := range []string{`{"a":`, `{"a":1} x`, `nul`} {
		j := &Job{Class: Batch, Workflow: json.RawMessage(wf)}
		if err := s.Submit(context.Background(), j); err == nil {
			t.Errorf("Submit(workflow %q) = nil; want an encode error", wf)
		}
	}
	if n := s.Counts()[Queued]; n != 0 {
		t.Errorf("%d jobs queued; want none", n)
	}
}

// TestRunningReadsMemory checks that Running gives the running jobs List
// gives, newest first, with their Facts and without decoding a record.
func TestRunningReadsMemory(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	var jobs []*Job
	for i := range 5 {
		jobs = append(jobs, submitGraph(t, s, []Class{Interactive, Batch}[i%2]))
	}
	for _, j := range jobs[:4] {
		must(t)(s.Start(j.ID, "w-"+j.ID))
	}
	must(t)(s.Finish(jobs[1].ID, nil))
	must(t)(s.Preempt(jobs[2].ID))
	recs0, _ := ReadCounts()
	got := s.Running()
	if recs, _ := ReadCounts(); recs != recs0 {
		t.Errorf("Running decoded %d records; want none", recs-recs0)
	}
	want, err := s.List(Running, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), ids(want)) || !slices.Equal(ids(got), []string{jobs[3].ID, jobs[0].ID}) {
		t.Fatalf("Running = %v; List(Running) = %v; want [%s %s]", ids(got), ids(want), jobs[3].ID, jobs[0].ID)
	}
	for i, j := range got {
		w := *want[i]
		w.Workflow = nil
		if j.Facts == nil || !reflect.DeepEqual(*j, w) {
			t.Errorf("Running()[%d] = %+v; want List's job without its workflow %+v", i, *j, w)
		}
	}
	got[0].Models[0] = "mutated"
	if again := s.Running(); again[0].Models[0] == "mutated" {
		t.Error("mutating a job Running returned changed the store")
	}
}
