package policy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := newTestHost(t, Config{})
	srv := httptest.NewServer(h.Handler("s3cret"))
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
		{name: "activate built-in", method: "POST", path: "/v1/policies/eviction/activate", token: "s3cret", body: []byte(`{"name":"gdsf","reason":"try"}`), status: 200},
		{name: "activate unknown", method: "POST", path: "/v1/policies/eviction/activate", token: "s3cret", body: []byte(`{"name":"zzz"}`), status: 404, errType: "not_found"},
		{name: "set param", method: "PUT", path: "/v1/policies/eviction/params", token: "s3cret", body: []byte(`{"name":"prefetch","value":0}`), status: 204},
		{name: "param out of range", method: "PUT", path: "/v1/policies/eviction/params", token: "s3cret", body: []byte(`{"name":"prefetch","value":7}`), status: 400, errType: "invalid_param"},
		{name: "param unknown", method: "PUT", path: "/v1/policies/eviction/params", token: "s3cret", body: []byte(`{"params":{"prefetch":1,"nope":2}}`), status: 400, errType: "unknown_param"},
		{name: "params neither form", method: "PUT", path: "/v1/policies/eviction/params", token: "s3cret", body: []byte(`{"name":"prefetch"}`), status: 400, errType: "invalid_body"},
		{name: "rollback", method: "POST", path: "/v1/policies/eviction/rollback", token: "s3cret", body: []byte(`{"reason":"done"}`), status: 200},
		{name: "rollback again", method: "POST", path: "/v1/policies/eviction/rollback", token: "s3cret", status: 404, errType: "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out := do(tc.method, tc.path, tc.token, tc.body)
			if status != tc.status || errType(out) != tc.errType {
				t.Errorf("%s %s = %d %v; want %d %q", tc.method, tc.path, status, out, tc.status, tc.errType)
			}
		})
	}
	if wasm, ok := modules["eviction.lru"]; ok {
		b, _ := os.ReadFile(wasm)
		status, out := do("POST", "/v1/policies/eviction?name=my-lru&activate=1&reason=test", "s3cret", b)
		if status != 201 || out["active"] != true || out["version"] != 1.0 {
			t.Errorf("load = %d %v; want 201, active, version 1", status, out)
		}
		if got := h.List()[0].Active; got != "my-lru@1" {
			t.Errorf("active %s, want my-lru@1", got)
		}
	}
	// No token configured: mutations are refused, never open.
	closed := httptest.NewServer(h.Handler(""))
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
