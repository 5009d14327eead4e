package predict

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func top(r []Score) string {
	if len(r) == 0 {
		return ""
	}
	return r[0].Model
}

func TestRecencyFollowsDriftingPopularity(t *testing.T) {
	p := New(Config{HalfLife: 10 * time.Minute})
	at := t0
	for range 200 { // a was popular for a long time...
		p.Observe(at, []string{"a"})
		at = at.Add(3 * time.Second)
	}
	at = at.Add(time.Hour)
	for range 20 { // ...then b took over
		p.Observe(at, []string{"b"})
		at = at.Add(3 * time.Second)
	}
	r := p.Ranked(at)
	if top(r) != "b" {
		t.Fatalf("ranked %v; want b first: a's 200 uses are an hour old with a 10 min half-life", r)
	}
	// Without decay to speak of, a's count would win.
	q := New(Config{HalfLife: 1000 * time.Hour})
	at = t0
	for range 200 {
		q.Observe(at, []string{"a"})
		at = at.Add(3 * time.Second)
	}
	for range 20 {
		q.Observe(at, []string{"b"})
	}
	if got := q.Ranked(at); got[0].Views[viewFrequency] < got[1].Views[viewFrequency] || got[0].Model != "a" && got[0].Views[viewTransition] == 0 {
		t.Fatalf("with a 1000 h half-life the frequency view should still favour a: %+v", got)
	}
}

func TestTransitionsPredictTheNextModel(t *testing.T) {
	// Each job's model is followed by a fixed successor, while all four
	// are equally frequent: only transitions can tell which comes next.
	next := map[string]string{"x": "y", "y": "z", "z": "w", "w": "x"}
	p := New(Config{})
	at, m := t0, "x"
	for range 400 {
		p.Observe(at, []string{m})
		m = next[m]
		at = at.Add(10 * time.Second)
	}
	// The last observed was w's predecessor chain: what follows now is m.
	r := p.Ranked(at)
	if top(r) != m {
		t.Fatalf("after %v the top is %q, want %q: %+v", p.last, top(r), m, r[:2])
	}
	w := p.Weights()
	if w[viewTransition] <= w[viewFrequency] || w[viewTransition] <= w[viewTimeOfDay] {
		t.Fatalf("weights %v: the transition view predicted every job and should weigh most", w)
	}
	if r[0].P < 0.6 {
		t.Fatalf("P(next) = %.2f; want most of the mass on the certain successor", r[0].P)
	}
}

func TestTimeOfDayIsLearnedOverDays(t *testing.T) {
	p := New(Config{HalfLife: 20 * time.Minute})
	rng := rand.New(rand.NewPCG(1, 2))
	for day := range 5 {
		base := t0.Add(time.Duration(day) * 24 * time.Hour)
		for i := range 60 { // mornings: sdxl; afternoons: flux, with noise
			p.Observe(base.Add(9*time.Hour+time.Duration(i)*time.Minute), []string{pick(rng, "sdxl", "sd15")})
			p.Observe(base.Add(15*time.Hour+time.Duration(i)*time.Minute), []string{pick(rng, "flux", "sd15")})
		}
	}
	// The next morning, hours after the last (afternoon) job: frequency
	// and transitions have faded toward flux/sd15, the hour remembers sdxl.
	morning := t0.Add(5*24*time.Hour + 9*time.Hour + 5*time.Minute)
	r := p.Ranked(morning)
	if top(r) != "sdxl" {
		t.Fatalf("at 09:05 ranked %v; want sdxl first", r)
	}
	if s := find(r, "sdxl"); s.Views[viewTimeOfDay] < 0.5 {
		t.Fatalf("the time-of-day view gives sdxl %.2f at 09:05; want most of it", s.Views[viewTimeOfDay])
	}
}

func pick(rng *rand.Rand, often, sometimes string) string {
	if rng.Float64() < 0.8 {
		return often
	}
	return sometimes
}

func find(r []Score, m string) Score {
	for _, s := range r {
		if s.Model == m {
			return s
		}
	}
	return Score{}
}

func TestSameHistorySameRanking(t *testing.T) {
	run := func() []Score {
		p := New(Config{})
		rng := rand.New(rand.NewPCG(7, 7))
		at := t0
		for range 2000 {
			p.Observe(at, []string{fmt.Sprint("m", rng.IntN(30)), fmt.Sprint("lora", rng.IntN(5))})
			at = at.Add(time.Duration(rng.IntN(20)) * time.Second)
		}
		return p.Ranked(at)
	}
	a, b := run(), run()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two predictors shown the same history at the same times rank differently")
	}
	sum := 0.0
	for _, s := range a {
		sum += s.P
	}
	// Each job asks for two models; the views are distributions over
	// models, so the mix sums to 1.
	if sum < 0.99 || sum > 1.01 {
		t.Fatalf("chances sum to %.3f, want 1", sum)
	}
}

func TestMemoryIsBounded(t *testing.T) {
	p := New(Config{MaxModels: 50})
	at := t0
	for i := range 1000 {
		p.Observe(at, []string{fmt.Sprint("m", i)})
		at = at.Add(time.Second)
	}
	if len(p.models) > 50 {
		t.Fatalf("%d models tracked, bound 50", len(p.models))
	}
	if !slices.ContainsFunc(p.Ranked(at), func(s Score) bool { return s.Model == "m999" }) {
		t.Fatal("the newest model was forgotten instead of the oldest")
	}
}

func TestNothingSeenNothingRanked(t *testing.T) {
	p := New(Config{})
	if r := p.Ranked(t0); len(r) != 0 {
		t.Fatalf("an empty predictor ranks %v", r)
	}
	p.Observe(t0, nil)
	p.Observe(t0, []string{""})
	if p.Jobs() != 0 {
		t.Fatal("a job without models counted")
	}
}
