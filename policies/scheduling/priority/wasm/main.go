// Command wasm builds the priority scheduling policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o scheduling.priority.wasm ./policies/scheduling/priority/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/scheduling/priority"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(priority.New()) }

func main() {}
