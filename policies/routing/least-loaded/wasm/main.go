// Command wasm builds the least-loaded routing policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o routing.least-loaded.wasm ./policies/routing/least-loaded/wasm
package main

import (
	leastloaded "github.com/kiln-gpu/kiln/policies/routing/least-loaded"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(leastloaded.New()) }

func main() {}
