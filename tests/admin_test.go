package tests

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdminEndpointsNeedTheToken checks that mutating admin endpoints answer
// 401 (JSON) without the bearer token, work with the one kiln generated in
// its data dir (mode 0600), and that the token never reaches the log.
func TestAdminEndpointsNeedTheToken(t *testing.T) {
	dataDir := t.TempDir()
	k := startKiln(t, dataDir)
	tokenFile := filepath.Join(dataDir, "admin.token")
	st, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatalf("kiln did not generate a token: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(tokenFile)
	token := strings.TrimSpace(string(raw))

	call := func(method, path, auth string, body []byte) (int, []byte) {
		req, _ := http.NewRequest(method, k.base+path, bytes.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.Bytes()
	}
	for _, tc := range []struct {
		name, method, path, auth string
		body                     []byte
		want                     int
	}{
		{"refresh without token", "POST", "/v1/models/refresh", "", nil, 401},
		{"refresh with a wrong token", "POST", "/v1/models/refresh", "Bearer nope", nil, 401},
		{"refresh with the token", "POST", "/v1/models/refresh", "Bearer " + token, nil, 200},
		{"policy rollback without token", "POST", "/v1/policies/eviction/rollback", "", nil, 401},
		{"policy list is readable", "GET", "/v1/policies", "", nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, data := call(tc.method, tc.path, tc.auth, tc.body)
			if code != tc.want {
				t.Fatalf("HTTP %d, want %d: %.300s", code, tc.want, data)
			}
			if code == 401 {
				var env struct {
					Error struct{ Type, Message string }
				}
				if json.Unmarshal(data, &env) != nil || env.Error.Message == "" {
					t.Fatalf("401 without a JSON error: %s", data)
				}
			}
		})
	}
	if strings.Contains(k.log.String(), token) {
		t.Fatal("the admin token appears in kiln's log")
	}
}

// TestRefusesToListenBeyondLoopbackWithoutAToken: exposing kiln needs a
// token the operator chose. kiln exits before it listens, so nothing is
// ever bound beyond loopback here.
func TestRefusesToListenBeyondLoopbackWithoutAToken(t *testing.T) {
	cmd := exec.Command(filepath.Join(binDir, "kiln"), "serve", "--listen", "0.0.0.0:0",
		"--data-dir", t.TempDir(), "--models", modelStore(t))
	cmd.Env = append(os.Environ(), "KILN_ADMIN_TOKEN=")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("kiln kept running with a non-loopback listen address and no token")
	}
	if err == nil || !strings.Contains(string(out), "not a loopback address") {
		t.Fatalf("want a refusal naming the problem, got err=%v:\n%s", err, out)
	}
}
