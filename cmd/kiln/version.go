package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/kiln-gpu/kiln/internal/metrics"
)

// version is set by the Makefile through -ldflags (git describe); without
// it, kiln version reads the module's build information, which go build
// and go install record (the module version, the VCS revision and whether
// the tree was modified).
var version = "dev"

// The daemon reports the same version as kiln version does: in
// kiln_build_info and on the dashboard.
func init() { metrics.Version = readVersion().Version }

// buildVersion is what kiln version prints.
type buildVersion struct {
	Version   string `json:"version"`
	Module    string `json:"module,omitempty"`
	Revision  string `json:"revision,omitempty"`
	Time      string `json:"time,omitempty"`
	Dirty     bool   `json:"dirty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// readVersion assembles kiln's version from -ldflags and the build info.
func readVersion() buildVersion {
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(version, bi)
}

// versionFrom is kiln's version from the -ldflags value ("dev" when unset)
// and the build info (nil when the binary has none).
func versionFrom(ldflags string, bi *debug.BuildInfo) buildVersion {
	v := buildVersion{Version: ldflags, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		if v.Version == "" {
			v.Version = "dev"
		}
		return v
	}
	v.Module = bi.Main.Path
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Dirty = s.Value == "true"
		}
	}
	if v.Version == "dev" || v.Version == "" {
		switch mv := bi.Main.Version; {
		case mv != "" && mv != "(devel)":
			v.Version = mv // go install module@version, or a VCS-stamped build
		case v.Revision != "":
			v.Version = "devel-" + short(v.Revision)
			if v.Dirty {
				v.Version += "-dirty"
			}
		default:
			v.Version = "devel"
		}
	}
	return v
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

const versionHelp = `usage: kiln version [flags]

Prints kiln's version: the Makefile's (git describe) when it set one, else
the module version that go build or go install recorded, with the VCS
revision, its time, and whether the tree had uncommitted changes.
`

func cmdVersion(args []string) error {
	fs := newFlags("version", versionHelp)
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("version", "unexpected argument %q", pos[0])
	}
	v := readVersion()
	return out.print(v, func(w io.Writer) error { return writeVersion(w, v) })
}

func writeVersion(w io.Writer, v buildVersion) error {
	var b strings.Builder
	fmt.Fprintf(&b, "kiln %s", v.Version)
	var extra []string
	if v.Revision != "" {
		r := "revision " + short(v.Revision)
		if v.Dirty {
			r += " (modified)"
		}
		extra = append(extra, r)
	}
	if v.Time != "" {
		extra = append(extra, v.Time)
	}
	extra = append(extra, v.GoVersion, v.Platform)
	fmt.Fprintf(&b, " (%s)\n", strings.Join(extra, ", "))
	_, err := io.WriteString(w, b.String())
	return err
}
