package policy

import (
	"reflect"
	"testing"
	"time"
)

func sampleScheduling() *SchedulingInput {
	return &SchedulingInput{
		Common:  Common{Now: 42, State: [4]uint64{1, 2, 3, 4}, Params: []float64{1.5}},
		Models:  []ModelInfo{{Bytes: 10, LoadCost: time.Second}, {Bytes: 20}},
		Queued:  []Job{{Seq: 1, Class: ClassBatch, Age: time.Minute, HasDeadline: true, Slack: -time.Second, Models: []uint32{0, 1}, Worker: NoWorker, BatchKey: 3}},
		Running: []Job{{Seq: 0, Models: []uint32{1}, Worker: 0, AtStepBoundary: true}},
		Workers: []Worker{{Device: 1, Idle: true, FreeVRAM: 5, Resident: []uint32{1}}, {Degraded: true, Resident: []uint32{}}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		enc  func() []byte
		dec  func([]byte) (any, error)
	}{
		{name: "scheduling", in: sampleScheduling(), enc: func() []byte { return AppendSchedulingInput(nil, sampleScheduling()) },
			dec: func(b []byte) (any, error) { var in SchedulingInput; return &in, DecodeSchedulingInput(b, &in) }},
		{name: "scheduling empty", in: &SchedulingInput{Workers: []Worker{{Idle: true}}}, enc: func() []byte {
			return AppendSchedulingInput(nil, &SchedulingInput{Workers: []Worker{{Idle: true}}})
		}, dec: func(b []byte) (any, error) { var in SchedulingInput; return &in, DecodeSchedulingInput(b, &in) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.dec(tc.enc())
			if err != nil {
				t.Fatal(err)
			}
			if !equalish(got, tc.in) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tc.in)
			}
		})
	}
}

// equalish compares ignoring nil versus empty slices.
func equalish(a, b any) bool {
	return reflect.DeepEqual(normalize(reflect.ValueOf(a)).Interface(), normalize(reflect.ValueOf(b)).Interface())
}

func normalize(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		n := reflect.New(v.Elem().Type())
		n.Elem().Set(normalize(v.Elem()))
		return n
	case reflect.Struct:
		n := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				n.Field(i).Set(normalize(v.Field(i)))
			}
		}
		return n
	case reflect.Slice:
		if v.Len() == 0 {
			return reflect.Zero(v.Type())
		}
		n := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			n.Index(i).Set(normalize(v.Index(i)))
		}
		return n
	}
	return v
}
