package policy

import (
	"fmt"
	"strings"
)

// reservedPrefix starts the export names the host keeps for itself: the
// instrumenter adds kiln.deadline and kiln.start (instrument.go), and a
// module's own export of either would collide with them or, worse, be
// called as a start function. ABI.md §7 reserves the whole prefix so that
// later minor versions can add names without breaking a module.
const reservedPrefix = "kiln."

// checkReservedExports refuses a module whose own export section (before
// instrumentation) holds a name that starts with "kiln.". It reads only the
// export section; anything malformed is left for the compiler to report.
func checkReservedExports(wasm []byte) error {
	if len(wasm) < 8 {
		return nil
	}
	r := reader{b: wasm, off: 8}
	for r.off < len(r.b) && r.err == nil {
		id := r.byte()
		body := r.bytes(int(r.u32()))
		if r.err != nil || id != 7 {
			continue
		}
		er := reader{b: body}
		for n := er.count(); n > 0 && er.err == nil; n-- {
			name := er.name()
			kind := er.byte()
			er.u32()
			if er.err == nil && strings.HasPrefix(name, reservedPrefix) {
				return fmt.Errorf("module exports %s %q: export names starting with %q are reserved for the host (ABI.md §7)",
					exportKind(kind), name, reservedPrefix)
			}
		}
		return nil
	}
	return nil
}

func exportKind(k byte) string {
	switch k {
	case 0:
		return "function"
	case 1:
		return "table"
	case 2:
		return "memory"
	case 3:
		return "global"
	}
	return "item"
}
