package sim

import (
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func tinyServeGen(o ServeGenOptions) ServeGenOptions {
	o.FS, o.Dir = os.DirFS("testdata/servegen"), "tiny"
	return o
}

func TestImportServeGenRateAndDeterminism(t *testing.T) {
	// The three clients' windows hold 900 + 900 + 1800 = 3600 expected
	// requests over 1800 s: a mean aggregate rate of 2 jobs/s, so a target
	// of 1 halves every rate.
	o := tinyServeGen(ServeGenOptions{TargetRate: 1, Checkpoints: 2, Seed: 4})
	_, a, err := ImportServeGen(o)
	if err != nil {
		t.Fatal(err)
	}
	if n := float64(len(a)); math.Abs(n-1800) > 0.15*1800 {
		t.Errorf("%d requests, want about 1800", len(a))
	}
	for i := 1; i < len(a); i++ {
		if a[i].Time < a[i-1].Time {
			t.Fatalf("requests out of order at %d", i)
		}
	}
	_, b, _ := ImportServeGen(o)
	if !reflect.DeepEqual(a, b) {
		t.Error("the same options gave two different traces")
	}
	o.Seed = 5
	_, c, _ := ImportServeGen(o)
	if reflect.DeepEqual(a, c) {
		t.Error("another seed gave the same trace")
	}
}

func TestImportServeGenSpanAndMapping(t *testing.T) {
	for _, tc := range []struct {
		mapping string
		// model of clients 1 and 2 (client 0 has no traffic in the span)
		want1, want2 string
	}{
		{MapStripe, "checkpoints/sdxl-01.safetensors", "checkpoints/sd15-00.safetensors"},
		{MapBlock, "checkpoints/sd15-00.safetensors", "checkpoints/sdxl-01.safetensors"},
	} {
		t.Run(tc.mapping, func(t *testing.T) {
			// The window from 600 s to 1200 s: clients 1 (0.5/s) and 2 (1/s).
			_, reqs, err := ImportServeGen(tinyServeGen(ServeGenOptions{Start: 10 * time.Minute, Duration: 10 * time.Minute,
				Checkpoints: 2, Mapping: tc.mapping, Seed: 1}))
			if err != nil {
				t.Fatal(err)
			}
			counts := map[string]int{}
			for _, r := range reqs {
				if r.Time < 0 || r.Time >= 10*time.Minute {
					t.Fatalf("request at %s outside the span", r.Time)
				}
				counts[strings.Join(r.Models, ";")]++
			}
			// Client 1 is odd: its jobs add a LoRA of its checkpoint's family.
			var c1, c2 int
			for set, n := range counts {
				switch {
				case strings.HasPrefix(set, tc.want1+";loras/"):
					c1 += n
				case set == tc.want2:
					c2 += n
				default:
					t.Errorf("unexpected model set %q (%d jobs)", set, n)
				}
			}
			// Expected 300 and 600 requests.
			if math.Abs(float64(c1)-300) > 0.35*300 || math.Abs(float64(c2)-600) > 0.2*600 {
				t.Errorf("client 1: %d jobs (want ≈ 300), client 2: %d (want ≈ 600)", c1, c2)
			}
		})
	}
}

func TestImportServeGenErrors(t *testing.T) {
	if _, _, err := ImportServeGen(tinyServeGen(ServeGenOptions{Mapping: "spiral"})); err == nil {
		t.Error("unknown mapping accepted")
	}
	if _, _, err := ImportServeGen(ServeGenOptions{FS: os.DirFS("testdata"), Dir: "servegen"}); err == nil || !strings.Contains(err.Error(), "no chunk") {
		t.Errorf("folder without client files: %v", err)
	}
	if _, err := readWindows(strings.NewReader("0,1,1,Gamma,x,1\n"), "c.csv"); err == nil || !strings.Contains(err.Error(), "c.csv:1: column 5") {
		t.Errorf("bad shape: %v", err)
	}
	ws, err := readWindows(strings.NewReader("ts,rate,cv,pattern,shape,scale\n0,1,1,Gamma,2,0.5\n"), "c.csv")
	if err != nil || len(ws) != 1 || ws[0].shape != 2 {
		t.Errorf("header line: %v, %+v", err, ws)
	}
}

func TestImportAzure(t *testing.T) {
	in := "TIMESTAMP,ContextTokens,GeneratedTokens\n" +
		"2023-11-16 18:15:46.6805900,374,44\n" +
		"2023-11-16 18:15:50.6805900,396,109\n" +
		"2023-11-16 18:15:48.6805900,10,10\n"
	_, reqs, err := ImportAzure(strings.NewReader(in), "conv.csv", AzureOptions{RateScale: 2, Checkpoints: 4, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Sorted, relative to the first, and twice as fast: 0, 1 s, 2 s.
	var got []time.Duration
	for _, r := range reqs {
		got = append(got, r.Time)
	}
	if want := []time.Duration{0, time.Second, 2 * time.Second}; !reflect.DeepEqual(got, want) {
		t.Errorf("times %v, want %v", got, want)
	}
	_, reqs, _ = ImportAzure(strings.NewReader(in), "conv.csv", AzureOptions{TargetRate: 0.75, Checkpoints: 4, Seed: 1})
	// 3 requests over 4 s is 0.75/s already: scale 1.
	if reqs[2].Time != 4*time.Second {
		t.Errorf("target rate: last at %v, want 4s", reqs[2].Time)
	}
	if _, _, err := ImportAzure(strings.NewReader("TIMESTAMP\nyesterday\nnow\n"), "conv.csv", AzureOptions{}); err == nil ||
		!strings.Contains(err.Error(), "conv.csv:2: column TIMESTAMP") {
		t.Errorf("bad timestamp: %v", err)
	}
}
