// Command wasm builds the demand eviction policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o eviction.demand.wasm ./policies/eviction/demand/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/eviction/demand"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(demand.New()) }

func main() {}
