package api

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-gpu/kiln/internal/httpjson"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// AdminTokenFile is the file in the data dir that holds a generated token.
const AdminTokenFile = "admin.token"

// AdminToken returns the admin token: configured, else $KILN_ADMIN_TOKEN,
// else the one kept in dataDir/admin.token, which it creates (mode 0600,
// 32 random bytes in hex) on first use. It never returns an empty token
// without an error.
func AdminToken(configured, dataDir string) (string, error) {
	if t := strings.TrimSpace(configured); t != "" {
		return t, nil
	}
	if t := strings.TrimSpace(os.Getenv("KILN_ADMIN_TOKEN")); t != "" {
		return t, nil
	}
	path := filepath.Join(dataDir, AdminTokenFile)
	if t, err := ReadAdminToken(dataDir); err == nil {
		return t, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := hex.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return ReadAdminToken(dataDir) // another process won the race
	}
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("admin token: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("admin token: write %s: %w", path, err)
	}
	return tok, nil
}

// ReadAdminToken reads the token kept in dataDir (what the CLI does).
func ReadAdminToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, AdminTokenFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("admin token: %s is empty", path)
	}
	return t, nil
}

// admin guards a mutating admin endpoint with the bearer token. The token
// is compared in constant time and never logged.
func (s *Server) admin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.adminTokenGiven(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln admin"`)
			writeError(w, http.StatusUnauthorized, "unauthorized",
				"this endpoint needs the admin token: Authorization: Bearer <token> (admin.token, KILN_ADMIN_TOKEN, or <data_dir>/admin.token)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// policyAdmin guards a policy change (/v1/policies/{kind}...) with the
// bearer token, then parses the kind. Its refusals are the policy API's
// own, older than admin's and kept as they were for its clients: 403
// admin_disabled where no token is configured, 401 otherwise.
func (s *Server) policyAdmin(f func(w http.ResponseWriter, r *http.Request, k abi.Kind)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.deps.AdminToken == "" {
			httpjson.Error(w, http.StatusForbidden, "admin_disabled", "no admin token is configured; policy changes are refused")
			return
		}
		if !s.adminTokenGiven(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln admin"`)
			httpjson.Error(w, http.StatusUnauthorized, "unauthorized", "policy changes need the admin token (Authorization: Bearer …)")
			return
		}
		k, ok := kindParam(w, r)
		if !ok {
			return
		}
		f(w, r, k)
	})
}

// adminTokenGiven says whether r carries the admin token, compared in
// constant time; never with no token configured.
func (s *Server) adminTokenGiven(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.deps.AdminToken != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.deps.AdminToken)) == 1
}
