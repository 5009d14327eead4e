package job

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

// sub is one submission of TestQueueOrder: a name for the expectations, a
// class, and the ordering the caller asks for.
type sub struct {
	name  string
	class Class
	order *float64
	front bool
}

func ord(v float64) *float64 { return &v }

func TestQueueOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		subs []sub
		want []string // Snapshot order, by name
	}{
		{
			name: "fifo without orders, across classes",
			subs: []sub{{name: "a", class: Batch}, {name: "b", class: Batch}, {name: "c", class: Interactive}},
			want: []string{"a", "b", "c"},
		},
		{
			name: "explicit orders within a class",
			subs: []sub{
				{name: "a", class: Batch, order: ord(30)},
				{name: "b", class: Batch, order: ord(10)},
				{name: "c", class: Batch, order: ord(20)},
				{name: "d", class: Batch}, // rank = its Seq (4): ahead of 10, 20, 30
			},
			want: []string{"d", "b", "c", "a"},
		},
		{
			name: "equal orders go by seq",
			subs: []sub{{name: "a", class: Batch, order: ord(5)}, {name: "b", class: Batch, order: ord(5)}},
			want: []string{"a", "b"},
		},
		{
			name: "front goes ahead, newest front first",
			subs: []sub{
				{name: "a", class: Batch}, {name: "b", class: Batch},
				{name: "f1", class: Batch, front: true}, {name: "f2", class: Batch, front: true},
				{name: "c", class: Batch},
			},
			want: []string{"f2", "f1", "a", "b", "c"},
		},
		{
			name: "an explicit order below front still wins",
			subs: []sub{{name: "f", class: Batch, front: true}, {name: "x", class: Batch, order: ord(-1000)}},
			want: []string{"x", "f"},
		},
		{
			name: "order given wins over front",
			subs: []sub{{name: "a", class: Batch}, {name: "f", class: Batch, front: true, order: ord(100)}},
			want: []string{"a", "f"},
		},
		{
			// ComfyUI orders its one queue by number: the store compares
			// ranks across classes too and leaves class to the policy.
			name: "orders compare across classes",
			subs: []sub{{name: "b", class: Batch, order: ord(-5)}, {name: "i", class: Interactive, order: ord(50)}},
			want: []string{"b", "i"},
		},
		{
			name: "front goes ahead of every class",
			subs: []sub{
				{name: "i", class: Interactive}, {name: "b", class: Batch},
				{name: "f", class: Batch, front: true},
			},
			want: []string{"f", "i", "b"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, path, _ := openTest(t, Config{})
			name := map[string]string{}
			for _, x := range tc.subs {
				j := newJob(x.class)
				j.Order, j.Front = x.order, x.front
				if err := s.Submit(context.Background(), j); err != nil {
					t.Fatalf("Submit %s: %v", x.name, err)
				}
				name[j.ID] = x.name
			}
			names := func(jobs []*Job) []string {
				out := make([]string, len(jobs))
				for i, j := range jobs {
					out[i] = name[j.ID]
				}
				return out
			}
			if got := names(s.Snapshot(0)); !slices.Equal(got, tc.want) {
				t.Fatalf("Snapshot = %v; want %v", got, tc.want)
			}
			// A started and re-queued job goes back to its place.
			first := s.Snapshot(1)[0]
			if _, err := s.Start(first.ID, "w"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Requeue(first.ID, "worker died"); err != nil {
				t.Fatal(err)
			}
			if got := names(s.Snapshot(0)); !slices.Equal(got, tc.want) {
				t.Fatalf("after requeue: Snapshot = %v; want %v", got, tc.want)
			}
			// The order is durable: a reopened store runs them the same way.
			s2 := reopen(t, s, path, Config{})
			if got := names(s2.Snapshot(0)); !slices.Equal(got, tc.want) {
				t.Fatalf("after reopen: Snapshot = %v; want %v", got, tc.want)
			}
		})
	}
}

func TestQueueOrderAfterRemovals(t *testing.T) {
	// Front jobs reuse the dead slots at the head of the index; the order
	// must stay right as jobs leave and arrive.
	s, _, _ := openTest(t, Config{})
	var want []string
	for range 5 {
		want = append(want, mustSubmit(t, s, Batch).ID)
	}
	for _, id := range want[:3] {
		if _, err := s.Start(id, "w"); err != nil {
			t.Fatal(err)
		}
	}
	want = want[3:]
	for range 2 {
		j := newJob(Batch)
		j.Front = true
		if err := s.Submit(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		want = append([]string{j.ID}, want...)
	}
	if got := ids(s.Snapshot(0)); !slices.Equal(got, want) {
		t.Fatalf("Snapshot = %v; want %v", got, want)
	}
}

func TestSubmitBadOrder(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		j := newJob(Batch)
		j.Order = &v
		if err := s.Submit(context.Background(), j); !errors.Is(err, ErrBadOrder) {
			t.Errorf("Submit(order %v) = %v; want ErrBadOrder", v, err)
		}
	}
}

func TestWindow(t *testing.T) {
	// Five batch jobs, then two interactive ones, then one more batch.
	s, _, _ := openTest(t, Config{})
	var b, in []string
	for range 5 {
		b = append(b, mustSubmit(t, s, Batch).ID)
	}
	for range 2 {
		in = append(in, mustSubmit(t, s, Interactive).ID)
	}
	b = append(b, mustSubmit(t, s, Batch).ID)
	for _, tc := range []struct {
		perClass int
		want     []string
	}{
		// Each class's head, merged in submission order: the interactive
		// jobs are in the window although five older batch jobs are not
		// all shown, and nothing is moved ahead of its elders.
		{perClass: 2, want: []string{b[0], b[1], in[0], in[1]}},
		{perClass: 3, want: []string{b[0], b[1], b[2], in[0], in[1]}},
		{perClass: 0, want: []string{b[0], b[1], b[2], b[3], b[4], in[0], in[1], b[5]}},
		{perClass: 100, want: []string{b[0], b[1], b[2], b[3], b[4], in[0], in[1], b[5]}},
	} {
		t.Run(fmt.Sprint(tc.perClass), func(t *testing.T) {
			if got := ids(s.Window(tc.perClass)); !slices.Equal(got, tc.want) {
				t.Errorf("Window(%d) = %v; want %v", tc.perClass, got, tc.want)
			}
		})
	}
}
