// Command wasm builds the fifo scheduling policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o scheduling.fifo.wasm ./policies/scheduling/fifo/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/scheduling/fifo"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(fifo.New()) }

func main() {}
