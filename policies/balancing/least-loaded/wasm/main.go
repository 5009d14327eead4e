// Command wasm builds the least-loaded balancing policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o balancing.least-loaded.wasm ./policies/balancing/least-loaded/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/balancing/least-loaded"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(leastloaded.New()) }

func main() {}
