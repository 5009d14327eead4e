//go:build tools

// This file pins modules that the roadmap (policies on wazero, process
// plugins on go-plugin) depends on before code imports them, so that
// `go mod tidy` keeps the versions chosen in go.mod.
package kiln

import (
	_ "github.com/hashicorp/go-plugin"
	_ "github.com/tetratelabs/wazero"
)
