// Command wasm builds the affinity routing policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o routing.affinity.wasm ./policies/routing/affinity/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/routing/affinity"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(affinity.New()) }

func main() {}
