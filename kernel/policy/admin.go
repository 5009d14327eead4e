package policy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
