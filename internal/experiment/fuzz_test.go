package experiment

import (
	"encoding/json"
	"math"
	"testing"
)

// FuzzParseGuard: any string either fails to parse or gives a guard on a
// known metric with a finite value.
func FuzzParseGuard(f *testing.F) {
	for _, s := range []string{"p95<=30s", "faults==0", "ratio_p99<=1.5!", "error_rate < 0.01", "hit_ratio>=", "<=3", "p95<=-1h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGuard(s)
		if err != nil {
			return
		}
		if math.IsNaN(g.Value) || math.IsInf(g.Value, 0) || g.Op == "" || g.Metric == "" {
			t.Fatalf("ParseGuard(%q) = %+v", s, g)
		}
		g.holds(1) // must not panic
	})
}

// FuzzSpec: any JSON body either fails to decode or validate, or gives a
// spec whose defaults validate again and survive a JSON round trip.
func FuzzSpec(f *testing.F) {
	f.Add(`{"kind":"scheduling","policy":"edf","type":"canary","steps":[5,25,50,100],"guards":["p95<=30s"]}`)
	f.Add(`{"kind":"balancing","policy":"affinity@2","type":"ab","share":30,"deadline":"1h","unit":"traffic"}`)
	f.Add(`{"kind":"eviction","policy":"gdsf","type":"switchback","window":600,"burn_in":"1m"}`)
	f.Fuzz(func(t *testing.T, body string) {
		var s Spec
		if json.Unmarshal([]byte(body), &s) != nil {
			return
		}
		s = s.withDefaults(DefaultConfig())
		if s.Validate() != nil {
			return
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("valid spec does not encode: %v", err)
		}
		var back Spec
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("spec valid before a JSON round trip, not after: %v\n%s", err, b)
		}
	})
}
