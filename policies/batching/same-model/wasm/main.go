// Command wasm builds the same-model batching policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o batching.same-model.wasm ./policies/batching/same-model/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/batching/same-model"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(samemodel.New()) }

func main() {}
