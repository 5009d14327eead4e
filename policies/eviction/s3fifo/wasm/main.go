// Command wasm builds the s3fifo eviction policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o eviction.s3fifo.wasm ./policies/eviction/s3fifo/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/eviction/s3fifo"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(s3fifo.New()) }

func main() {}
