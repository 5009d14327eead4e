package sjf

import (
	"slices"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		name   string
		queued []policy.Job
		want   []uint32
	}{
		{name: "shortest first", queued: []policy.Job{{Seq: 1, EstCost: 9 * time.Second}, {Seq: 2, EstCost: time.Second}}, want: []uint32{1, 0}},
		{name: "interactive first", queued: []policy.Job{{Seq: 1, Class: policy.ClassBatch, EstCost: time.Second}, {Seq: 2, EstCost: time.Hour}}, want: []uint32{1, 0}},
		{name: "no starvation", queued: []policy.Job{{Seq: 1, EstCost: time.Second}, {Seq: 2, EstCost: time.Hour, Age: 2 * time.Minute}}, want: []uint32{1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := policy.NewGuest(SJF{})
			if err != nil {
				t.Fatal(err)
			}
			var out policy.SchedulingOutput
			st, err := policy.DecodeSchedulingOutput(g.Call(policy.KindScheduling, policy.AppendSchedulingInput(nil, &policy.SchedulingInput{Queued: tc.queued})), &out)
			if err != nil || st != policy.StatusOK || !slices.Equal(out.Dispatch, tc.want) {
				t.Errorf("Schedule = %v, %v, %v; want %v", out.Dispatch, st, err, tc.want)
			}
		})
	}
}
