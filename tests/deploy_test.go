package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSystemdUnitVerifies runs systemd-analyze verify on
// deploy/systemd/kiln.service, its ExecStart pointed at the kiln this test
// built (verify checks that the binary exists), and fails on any complaint
// about the unit, an unknown key included (verify only warns of those).
func TestSystemdUnitVerifies(t *testing.T) {
	unit, err := os.ReadFile("../deploy/systemd/kiln.service")
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for _, want := range []string{
		"ExecStart=/usr/local/lib/kiln/kiln serve --config /etc/kiln/kiln.yaml",
		"DynamicUser=yes", "StateDirectory=kiln", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "CapabilityBoundingSet=\n", "DevicePolicy=closed", "DeviceAllow=char-nvidia-frontend rw",
		"DeviceAllow=char-nvidia-uvm rw", "SystemCallFilter=@system-service",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("kiln.service lacks %q", strings.TrimSpace(want))
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd); the unit is not verified")
	}
	dir := t.TempDir()
	local := strings.ReplaceAll(text, "/usr/local/lib/kiln/kiln", filepath.Join(binDir, "kiln"))
	path := filepath.Join(dir, "kiln.service")
	if err := os.WriteFile(path, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "kiln.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	// Its exposure score, for the log (systemd-analyze security --offline).
	if sec, err := exec.Command(sa, "security", "--offline=yes", path).CombinedOutput(); err == nil {
		if m := regexp.MustCompile(`Overall exposure level for kiln.service: ([0-9.]+ \w+)`).FindSubmatch(sec); m != nil {
			t.Logf("systemd-analyze security: exposure %s", m[1])
		}
	}
}

// TestDeployConfigsValidate: the configs the unit and the image ship are
// valid for this kiln.
func TestDeployConfigsValidate(t *testing.T) {
	for _, f := range []string{"../deploy/kiln.yaml", "../deploy/container/kiln.yaml"} {
		out, err := exec.Command(filepath.Join(binDir, "kiln"), "config", "validate", f).CombinedOutput()
		if err != nil {
			t.Errorf("kiln config validate %s: %v\n%s", f, err, out)
		}
	}
}

// TestDockerfile checks what can be checked without docker: two stages,
// the final one non-root, every binary of make build beside kiln, the
// config it copies present, kiln serve --config as the command.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	if n := len(regexp.MustCompile(`(?m)^FROM `).FindAllString(df, -1)); n < 2 {
		t.Errorf("Dockerfile has %d stages; want a build stage and a runtime stage", n)
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "root") || strings.HasPrefix(users[len(users)-1][1], "0") {
		t.Errorf("the image must run as a non-root USER: %v", users)
	}
	for _, want := range []string{"RUN make build", "COPY --from=build /src/bin/ /opt/kiln/bin/", `CMD ["serve", "--config", "/etc/kiln/kiln.yaml"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^COPY (deploy/\S+)`).FindAllStringSubmatch(df, -1) {
		if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
			t.Errorf("Dockerfile copies %s: %v", m[1], err)
		}
	}
	// make build puts every binary kiln runs in bin/, which the image copies whole.
	mk, _ := os.ReadFile("../Makefile")
	for _, b := range []string{"kiln-worker-sim", "storage-fs", "loader-safetensors"} {
		if !strings.Contains(string(mk), b) {
			t.Errorf("Makefile's build no longer builds %s into bin/", b)
		}
	}
}
