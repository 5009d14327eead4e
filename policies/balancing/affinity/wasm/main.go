// Command wasm builds the affinity balancing policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o balancing.affinity.wasm ./policies/balancing/affinity/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/balancing/affinity"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(affinity.New()) }

func main() {}
