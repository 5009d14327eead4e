package main

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/api"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/policy"
)

func TestCmdPolicy(t *testing.T) {
	h, err := policy.NewHost(policy.Config{NativeBuiltins: true}, zerolog.Nop(), clock.Real())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv := httptest.NewServer(api.New(api.Config{}, api.Deps{Log: zerolog.Nop(), Policies: h, AdminToken: "tok"}).Handler())
	defer srv.Close()
	t.Setenv("KILN_ADMIN_TOKEN", "")
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		active  string // eviction's active policy afterwards
	}{
		{name: "list", args: []string{"list", "--addr", srv.URL}, active: "lru@1"},
		{name: "list json", args: []string{"list", "--json", "--addr", srv.URL}, active: "lru@1"},
		{name: "activate without token", args: []string{"activate", "gdsf", "--addr", srv.URL, "--data-dir", t.TempDir()}, wantErr: "no admin token", active: "lru@1"},
		{name: "activate wrong token", args: []string{"activate", "gdsf", "--addr", srv.URL, "--token", "x"}, wantErr: "unauthorized", active: "lru@1"},
		{name: "activate finds the kind", args: []string{"activate", "gdsf", "--addr", srv.URL, "--token", "tok", "--reason", "test"}, active: "gdsf@1"},
		{name: "activate unknown", args: []string{"activate", "nope@2", "--kind", "eviction", "--addr", srv.URL, "--token", "tok"}, wantErr: "not_found", active: "gdsf@1"},
		{name: "rollback", args: []string{"rollback", "eviction", "--addr", srv.URL, "--token", "tok"}, active: "lru@1"},
		{name: "load needs kind", args: []string{"load", "x.wasm", "--addr", srv.URL}, wantErr: "usage", active: "lru@1"},
		{name: "bad kind", args: []string{"rollback", "cooking", "--addr", srv.URL}, wantErr: "unknown policy kind", active: "lru@1"},
		{name: "set", args: []string{"set", "eviction", "prefetch=0", "--addr", srv.URL, "--token", "tok"}, active: "lru@1"},
		{name: "set malformed", args: []string{"set", "eviction", "prefetch", "--addr", srv.URL, "--token", "tok"}, wantErr: "NAME=NUMBER", active: "lru@1"},
		{name: "set unknown param", args: []string{"set", "eviction", "nope=1", "--addr", srv.URL, "--token", "tok"}, wantErr: "nope", active: "lru@1"},
		{name: "set out of range", args: []string{"set", "eviction", "prefetch=7", "--addr", srv.URL, "--token", "tok"}, wantErr: "prefetch", active: "lru@1"},
		{name: "set bool takes 0 or 1", args: []string{"set", "eviction", "prefetch=0.5", "--addr", srv.URL, "--token", "tok"}, wantErr: "not 0 or 1", active: "lru@1"},
		{name: "set unknown lists declared", args: []string{"set", "eviction", "prefetch=1", "min_hits=2", "--addr", srv.URL, "--token", "tok"}, wantErr: "declares: prefetch (bool)", active: "lru@1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := cmdPolicy(tc.args)
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("cmdPolicy(%v) = %v; want error containing %q", tc.args, err, tc.wantErr)
			}
			if got := h.List()[0].Active; got != tc.active {
				t.Errorf("active eviction policy %s, want %s", got, tc.active)
			}
		})
	}
	// The successful set changed the active version's value.
	for _, v := range h.List()[0].Versions {
		if v.Active && v.Params["prefetch"] != 0 {
			t.Errorf("active %s@%d has prefetch %v after `set eviction prefetch=0`", v.Name, v.Version, v.Params["prefetch"])
		}
	}
}
