package tests

import (
	"reflect"
	"testing"
	"time"
)

// TestComfyQueueOrder checks that ComfyUI's `number` and `front` map onto
// kiln's queue order: with the one worker busy, prompts queued with explicit
// numbers, with front and without either are listed by /queue, and then run,
// in the order ComfyUI would run them: lowest number first, a prompt without
// a number ranking by its submission number, and front ahead of all.
func TestComfyQueueOrder(t *testing.T) {
	// The default class (interactive) for every prompt: front then goes
	// ahead by position, not only by class.
	k, _ := startComfyRoutesKiln(t, "0.5")
	ws := dialWS(t, k, "orderer")

	// 150 steps at 1024×1024 keep the worker busy until the interrupt.
	longGraph := loadWorkflow(t, txt2img, 150, 1)
	longGraph["5"].(map[string]any)["inputs"].(map[string]any)["width"] = 1024
	longGraph["5"].(map[string]any)["inputs"].(map[string]any)["height"] = 1024
	code, ans := k.postJSON("/prompt", map[string]any{"prompt": longGraph, "client_id": "blocker"})
	if code != 200 {
		t.Fatalf("/prompt: %d %v", code, ans)
	}
	long := ans["prompt_id"].(string)
	waitFor(t, 30*time.Second, "the long prompt to run", func() bool { return k.job(long).State == "running" })

	// Submission numbers start at 1 on a fresh kiln and stay far below
	// 50, so the explicit numbers below fall where the comments say.
	type sub struct {
		name   string
		body   map[string]any // besides prompt and client_id
		number float64        // what /prompt and /queue report; 0: the submission number
	}
	subs := []sub{
		{name: "plain-1", body: map[string]any{}},
		{name: "number-0.5", body: map[string]any{"number": 0.5}, number: 0.5}, // ahead of every submission number
		{name: "number-100", body: map[string]any{"number": 100}, number: 100}, // after everything
		{name: "front", body: map[string]any{"front": true}},                   // ahead of all, numbers included
		{name: "plain-2", body: map[string]any{}},
		{name: "number-50-string", body: map[string]any{"number": "50"}, number: 50}, // float("50"), as ComfyUI
		{name: "number-wins-over-front", body: map[string]any{"number": 75, "front": true}, number: 75},
	}
	wantOrder := []string{"front", "number-0.5", "plain-1", "plain-2", "number-50-string", "number-wins-over-front", "number-100"}

	id := map[string]string{}
	name := map[string]string{}
	var lastSeq float64
	for i, s := range subs {
		body := map[string]any{"prompt": loadWorkflow(t, txt2img, 2, 100+i), "client_id": "orderer"}
		for k, v := range s.body {
			body[k] = v
		}
		code, ans := k.postJSON("/prompt", body)
		if code != 200 {
			t.Fatalf("/prompt %s: %d %v", s.name, code, ans)
		}
		id[s.name] = ans["prompt_id"].(string)
		name[id[s.name]] = s.name
		n, _ := ans["number"].(float64)
		if s.number != 0 {
			if n != s.number {
				t.Errorf("%s: number %v, want %v", s.name, n, s.number)
			}
		} else {
			// Submission numbers, increasing (front included: see
			// docs/comfyui.md).
			if n <= lastSeq {
				t.Errorf("%s: number %v, want above %v", s.name, n, lastSeq)
			}
			lastSeq = n
		}
	}

	t.Run("GET /queue", func(t *testing.T) {
		q := k.getJSON("/queue")
		var got []string
		for _, it := range q["queue_pending"].([]any) {
			item := it.([]any)
			got = append(got, name[item[1].(string)])
			for _, s := range subs {
				if s.name == name[item[1].(string)] && s.number != 0 && item[0] != s.number {
					t.Errorf("%s: /queue number %v, want %v", s.name, item[0], s.number)
				}
			}
		}
		if !reflect.DeepEqual(got, wantOrder) {
			t.Errorf("queue_pending %v\nwant          %v", got, wantOrder)
		}
	})

	t.Run("run order", func(t *testing.T) {
		if code, _ := k.postJSON("/interrupt", map[string]any{"client_id": "blocker"}); code != 200 {
			t.Fatalf("/interrupt: %d", code)
		}
		var started []string
		succeeded := 0
		deadline := time.After(120 * time.Second)
		for succeeded < len(subs) {
			select {
			case m, ok := <-ws.msgs:
				if !ok {
					t.Fatal("socket closed")
				}
				d, _ := m["data"].(map[string]any)
				p, _ := d["prompt_id"].(string)
				switch m["type"] {
				case "execution_start":
					started = append(started, name[p])
				case "execution_success":
					succeeded++
				case "execution_error":
					t.Fatalf("execution_error: %v", d)
				}
			case <-deadline:
				t.Fatalf("timed out; started %v", started)
			}
		}
		if !reflect.DeepEqual(started, wantOrder) {
			t.Errorf("run order %v\nwant      %v", started, wantOrder)
		}
	})
}
