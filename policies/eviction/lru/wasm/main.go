// Command wasm builds the lru eviction policy as a WASM reactor for kiln:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o eviction.lru.wasm ./policies/eviction/lru/wasm
package main

import (
	"github.com/kiln-gpu/kiln/policies/eviction/lru"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(lru.New()) }

func main() {}
