// Command wasm builds the none batching policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o batching.none.wasm ./policies/batching/none/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/batching/none"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(none.New()) }

func main() {}
