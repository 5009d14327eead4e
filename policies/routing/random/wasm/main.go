// Command wasm builds the random routing policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o routing.random.wasm ./policies/routing/random/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/routing/random"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(random.New()) }

func main() {}
