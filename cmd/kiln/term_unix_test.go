//go:build linux

package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a real pseudo-terminal of the given width: the master to
// read what was drawn, the slave to draw on.
func openPTY(t *testing.T, cols uint16) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: cols}); err != nil {
		t.Fatalf("set window size: %v", err)
	}
	return m, s
}

func TestTermWidth(t *testing.T) {
	_, s := openPTY(t, 37)
	if w := termWidth(s); w != 37 {
		t.Errorf("termWidth of a 37-column terminal: %d", w)
	}
	f, err := os.CreateTemp(t.TempDir(), "notatty")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if w := termWidth(f); w != 0 {
		t.Errorf("termWidth of a file: %d, want 0", w)
	}
}

// On a narrow terminal the redrawn --wait line is cut to fit, so the next
// redraw (\r, erase line) overwrites all of it.
func TestWaitLineFitsTerminal(t *testing.T) {
	m, s := openPTY(t, 30)
	wt := newWaiter(nil, "j1", s, []byte(`{"workflow": {"3": {"inputs": {"steps": 20}}}}`))
	if !wt.tty {
		t.Fatal("a pseudo-terminal is not seen as a terminal")
	}
	wt.now = func() time.Time { return time.Unix(1000, 0) }
	j := jobView{State: "running", Progress: &jobProgress{Phase: "running", Node: "3", Value: 7, Max: 20}}
	wt.draw(j, time.Unix(990, 0))
	full := wt.prog.line(j, 10*time.Second, wt.now())
	if len([]rune(full)) <= 30 {
		t.Fatalf("the test's line %q already fits 30 columns", full)
	}
	buf := make([]byte, 4096)
	m.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := m.Read(buf)
	if err != nil {
		t.Fatalf("read the terminal: %v", err)
	}
	out := string(buf[:n])
	drawn := strings.TrimPrefix(out, "\r\033[K")
	if drawn == out {
		t.Fatalf("no redraw escape: %q", out)
	}
	if w := len([]rune(drawn)); w > 29 {
		t.Errorf("drawn line is %d columns on a 30-column terminal: %q", w, drawn)
	}
	if !strings.HasPrefix(full, drawn) {
		t.Errorf("drawn %q is not the start of %q", drawn, full)
	}
}
