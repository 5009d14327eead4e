// Command wasm builds the round-robin balancing policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o balancing.round-robin.wasm ./policies/balancing/round-robin/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/balancing/round-robin"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(roundrobin.New()) }

func main() {}
