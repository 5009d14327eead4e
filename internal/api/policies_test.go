package api

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// policyHost is a real policy host serving the built-ins' native builds
// (the same source as their WASM builds, without compiling them here).
func policyHost(t *testing.T) *policy.Host {
	t.Helper()
	h, err := policy.NewHost(policy.Config{NativeBuiltins: true}, zerolog.Nop(), clock.Real())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestPolicyRoutes(t *testing.T) {
	h := policyHost(t)
	srv := httptest.NewServer(New(Config{}, Deps{Log: zerolog.Nop(), Policies: h, AdminToken: "s3cret"}).Handler())
	defer srv.Close()
	do := func(method, path, token string, body []byte) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	errType := func(m map[string]any) string {
		e, _ := m["error"].(map[string]any)
		s, _ := e["type"].(string)
		return s
	}
	for _, tc := range []struct {
		name, method, path, token string
		body                      []byte
		status                    int
		errType                   string
	}{
		{name: "list", method: "GET", path: "/v1/policies", status: 200},
		{name: "one kind", method: "GET", path: "/v1/policies/eviction", status: 200},
		{name: "unknown kind", method: "GET", path: "/v1/policies/magic", status: 404, errType: "unknown_kind"},
		{name: "load without token", method: "POST", path: "/v1/policies/eviction?name=x", body: []byte("\x00asm"), status: 401, errType: "unauthorized"},
		{name: "load with wrong token", method: "POST", path: "/v1/policies/eviction?name=x", token: "nope", status: 401, errType: "unauthorized"},
		{name: "load garbage", method: "POST", path: "/v1/policies/eviction?name=x", token: "s3cret", body: []byte("junk"), status: 422, errType: "invalid_policy"},
		{name: "unknown kind with token", method: "POST", path: "/v1/policies/magic/rollback", token: "s3cret", status: 404, errType: "unknown_kind"},
		{name: "activate built-in", method: "POST", path: "/v1/policies/eviction/activate", token: "s3cret", body: []byte(`{"name":"gdsf","reason":"try"}`), status: 200},
		{name: "activate unknown", method: "POST", path: "/v1/policies/eviction/activate", token: "s3cret", body: []byte(`{"name":"zzz"}`), status: 404, errType: "not_found"},
		{name: "activate bad body", method: "POST", path: "/v1/policies/eviction/activate", token: "s3cret", body: []byte(`{"name":`), status: 400, errType: "invalid_body"},
		{name: "set param", method: "PUT", path: "/v1/policies/eviction/params", token: "s3cret", body: []byte(`{"name":"prefetch","value":0}`), status: 204},
		{name: "param out of range", method: "PUT", path: "/v1/policies/eviction/params", token: "s3cret", body: []byte(`{"name":"prefetch","value":7}`), status: 400, errType: "invalid_param"},
		{name: "param unknown", method: "PUT", path: "/v1/policies/eviction/params", token: "s3cret", body: []byte(`{"params":{"prefetch":1,"nope":2}}`), status: 400, errType: "unknown_param"},
		{name: "params neither form", method: "PUT", path: "/v1/policies/eviction/params", token: "s3cret", body: []byte(`{"name":"prefetch"}`), status: 400, errType: "invalid_body"},
		{name: "rollback", method: "POST", path: "/v1/policies/eviction/rollback", token: "s3cret", body: []byte(`{"reason":"done"}`), status: 200},
		{name: "rollback again", method: "POST", path: "/v1/policies/eviction/rollback", token: "s3cret", status: 404, errType: "not_found"},
		{name: "unload without a version", method: "POST", path: "/v1/policies/scheduling/unload", token: "s3cret", body: []byte(`{"name":"priority"}`), status: 400, errType: "invalid_body"},
		// The active version cannot be unloaded: a 409 with a JSON body.
		{name: "unload the active version", method: "POST", path: "/v1/policies/scheduling/unload", token: "s3cret", body: []byte(`{"name":"priority","version":1}`), status: 409, errType: "in_use"},
		{name: "no such method", method: "DELETE", path: "/v1/policies/eviction", token: "s3cret", status: 405, errType: "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out := do(tc.method, tc.path, tc.token, tc.body)
			if status != tc.status || errType(out) != tc.errType {
				t.Errorf("%s %s = %d %v; want %d %q", tc.method, tc.path, status, out, tc.status, tc.errType)
			}
		})
	}
	// A WASM module, where this checkout has the built-ins' WASM builds
	// (make policies; make test builds them first).
	if wasm, err := fs.ReadFile(policy.BuiltinFS(), policy.BuiltinFile(abi.KindEviction, "lru")); err == nil {
		status, out := do("POST", "/v1/policies/eviction?name=my-lru&activate=1&reason=test", "s3cret", wasm)
		if status != 201 || out["active"] != true || out["version"] != 1.0 {
			t.Errorf("load = %d %v; want 201, active, version 1", status, out)
		}
		if got := h.List()[0].Active; got != "my-lru@1" {
			t.Errorf("active %s, want my-lru@1", got)
		}
		if status, _ := do("POST", "/v1/policies/eviction?name=my-lru", "s3cret", wasm); status != 200 {
			t.Errorf("the same bytes again = %d, want 200 (the version they are)", status)
		}
	} else {
		t.Logf("no WASM build of eviction.lru in this checkout (make policies): the upload is not checked: %v", err)
	}
	// No token configured: mutations are refused, never open.
	closed := httptest.NewServer(New(Config{}, Deps{Log: zerolog.Nop(), Policies: h}).Handler())
	defer closed.Close()
	resp, err := http.Post(closed.URL+"/v1/policies/eviction/rollback", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("mutation without a configured token = %d, want 403", resp.StatusCode)
	}
}

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KILN_ADMIN_TOKEN", "")
	for _, tc := range []struct {
		name, configured, env string
		want                  string // "" means: the generated one
	}{
		{name: "configured wins", configured: "cfg", env: "env", want: "cfg"},
		{name: "env next", env: "env", want: "env"},
		{name: "generated", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KILN_ADMIN_TOKEN", tc.env)
			got, err := AdminToken(tc.configured, dir)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" {
				if got != tc.want {
					t.Errorf("token %q, want %q", got, tc.want)
				}
				return
			}
			if len(got) != 64 {
				t.Errorf("generated token %q is not 32 hex bytes", got)
			}
			st, err := os.Stat(filepath.Join(dir, AdminTokenFile))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("token file: %v, mode %v; want 0600", err, st.Mode().Perm())
			}
			again, _ := AdminToken("", dir)
			read, _ := ReadAdminToken(dir)
			if again != got || read != got {
				t.Errorf("second call %q, read %q; want the kept %q", again, read, got)
			}
		})
	}
}
