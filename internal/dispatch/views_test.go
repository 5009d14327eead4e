package dispatch

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// TestQueuedViewsTellTheTruth builds the live dispatcher's queued-job views
// (queuedViews, over a real store) for two situations that differ in one
// field and checks that the field differs, with its true value: a field
// the dispatcher zeroed, set to a constant or reordered by class fails.
// The fields priced from the catalog and the tiers (EstimatedVRAM,
// ModelBytes, LoadCost, EstimatedCost) are covered by
// TestViewsCarryCostEstimates and the simulator's TestViewsTellTheTruth,
// which shares this code's decision core.
func TestQueuedViewsTellTheTruth(t *testing.T) {
	type sub struct {
		class    job.Class
		deadline int64
		models   []string
		front    bool
	}
	a, b := "checkpoints/a.safetensors", "checkpoints/b.safetensors"
	for _, tc := range []struct {
		name string
		subs [2][]sub
		// then runs between the submissions and the views.
		then  func(t *testing.T, s *job.Store, clk *clock.Fake, ids []string)
		field func(v decision.JobView) any
		want  [2]any
	}{
		{name: "Class", subs: [2][]sub{{{class: job.Batch}}, {{class: job.Interactive}}},
			field: func(v decision.JobView) any { return v.Class }, want: [2]any{job.Batch, job.Interactive}},
		{name: "Seq is arrival order across classes",
			subs:  [2][]sub{{{class: job.Interactive}, {class: job.Batch}}, {{class: job.Batch}, {class: job.Interactive}}},
			field: func(v decision.JobView) any { return v.Seq }, want: [2]any{uint64(1), uint64(2)}},
		{name: "Seq honours front",
			subs:  [2][]sub{{{class: job.Batch}, {class: job.Interactive}}, {{class: job.Batch}, {class: job.Interactive, front: true}}},
			field: func(v decision.JobView) any { return v.Seq }, want: [2]any{uint64(2), uint64(1)}},
		{name: "DeadlineMS", subs: [2][]sub{{{class: job.Interactive}}, {{class: job.Interactive, deadline: 30000}}},
			field: func(v decision.JobView) any { return v.DeadlineMS }, want: [2]any{int64(0), int64(30000)}},
		{name: "Models", subs: [2][]sub{{{class: job.Batch, models: []string{a}}}, {{class: job.Batch, models: []string{b}}}},
			field: func(v decision.JobView) any { return v.Models }, want: [2]any{[]string{a}, []string{b}}},
		{name: "BatchKey", subs: [2][]sub{{{class: job.Batch, models: []string{a}}}, {{class: job.Batch, models: []string{b}}}},
			field: func(v decision.JobView) any { return v.BatchKey }, want: [2]any{BatchKey([]string{a}), BatchKey([]string{b})}},
		{name: "Age", subs: [2][]sub{{{class: job.Batch}}, {{class: job.Batch}}},
			then:  func(t *testing.T, _ *job.Store, clk *clock.Fake, _ []string) { clk.Advance(7 * time.Second) },
			field: func(v decision.JobView) any { return v.Age }},
		{name: "Attempts", subs: [2][]sub{{{class: job.Batch}}, {{class: job.Batch}}},
			then: func(t *testing.T, s *job.Store, _ *clock.Fake, ids []string) {
				if _, err := s.Start(ids[0], "w"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Requeue(ids[0], "worker died"); err != nil {
					t.Fatal(err)
				}
			},
			field: func(v decision.JobView) any { return v.Attempts }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]any
			for variant := range 2 {
				clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
				dir := t.TempDir()
				s, err := job.Open(filepath.Join(dir, "queue.db"), job.Config{MaxAttempts: 3}.WithDefaults(), clk)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				var ids []string
				for _, x := range tc.subs[variant] {
					models := x.models
					if models == nil {
						models = []string{a}
					}
					j := &job.Job{Class: x.class, DeadlineMS: x.deadline, Models: models, Front: x.front, Workflow: []byte(`{}`)}
					if err := s.Submit(context.Background(), j); err != nil {
						t.Fatal(err)
					}
					ids = append(ids, j.ID)
				}
				if tc.then != nil && variant == 1 {
					tc.then(t, s, clk, ids)
				}
				d := New(Options{Store: s, Catalog: catalog.New(filepath.Join(dir, "models"), cost.Default()), Clock: clk, Log: zerolog.Nop()})
				// The view of the interactive job, else of the last one.
				pick := ids[len(ids)-1]
				for i, x := range tc.subs[variant] {
					if x.class == job.Interactive {
						pick = ids[i]
					}
				}
				for _, v := range d.queuedViews(decision.QueueWindow) {
					if v.ID == pick {
						got[variant] = tc.field(v)
					}
				}
			}
			if tc.want[0] != nil {
				if !reflect.DeepEqual(got[0], tc.want[0]) || !reflect.DeepEqual(got[1], tc.want[1]) {
					t.Errorf("got %v, %v; want %v, %v", got[0], got[1], tc.want[0], tc.want[1])
				}
				return
			}
			if reflect.DeepEqual(got[0], got[1]) {
				t.Errorf("the same in both situations: %v", got[0])
			}
		})
	}
}
