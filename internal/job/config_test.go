package job

import (
	"strings"
	"testing"
)

func TestConfigWithDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
		want Config
	}{
		{name: "zero", in: Config{}, want: Config{InteractiveLimit: 10000, BatchLimit: 100000, MaxAttempts: 3, CommitMaxBatch: 1024, HistoryLimit: 10000}},
		{name: "kept", in: Config{InteractiveLimit: 5, BatchLimit: 6, MaxAttempts: 7, CommitMaxBatch: 8, HistoryLimit: 9}, want: Config{InteractiveLimit: 5, BatchLimit: 6, MaxAttempts: 7, CommitMaxBatch: 8, HistoryLimit: 9}},
		{name: "negative kept", in: Config{MaxAttempts: -1, HistoryLimit: -1}, want: Config{InteractiveLimit: 10000, BatchLimit: 100000, MaxAttempts: -1, CommitMaxBatch: 1024, HistoryLimit: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.WithDefaults(); got != tc.want {
				t.Errorf("WithDefaults() = %+v; want %+v", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      Config
		wantErr []string
	}{
		{name: "defaults", in: Config{}.WithDefaults()},
		{name: "max attempts", in: Config{MaxAttempts: -2}.WithDefaults(), wantErr: []string{"queue.max_attempts: must be ≥ 1"}},
		{name: "zero is invalid", in: Config{InteractiveLimit: 1, BatchLimit: 1, MaxAttempts: 1}, wantErr: []string{"queue.commit_max_batch"}},
		{name: "all", in: Config{InteractiveLimit: -1, BatchLimit: -1, MaxAttempts: -1, CommitMaxBatch: -1},
			wantErr: []string{"queue.interactive_limit", "queue.batch_limit", "queue.max_attempts", "queue.commit_max_batch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.in.Validate()
			if (err != nil) != (len(tc.wantErr) > 0) {
				t.Fatalf("Validate() = %v; want error %v", err, tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q; want it to mention %q", err, w)
				}
			}
		})
	}
}
