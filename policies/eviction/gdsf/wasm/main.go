// Command wasm builds the gdsf eviction policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o eviction.gdsf.wasm ./policies/eviction/gdsf/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/eviction/gdsf"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(gdsf.New()) }

func main() {}
