// Command wasm builds the edf scheduling policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o scheduling.edf.wasm ./policies/scheduling/edf/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/scheduling/edf"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(edf.New()) }

func main() {}
