// Command wasm builds the sjf example policy as a kiln WASM module:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o sjf.wasm ./examples/policy-go/wasm
//	kiln policy load sjf.wasm --kind scheduling --activate
package main

import (
	sjf "github.com/kiln-gpu/kiln/examples/policy-go"
	"github.com/kiln-gpu/kiln/sdk/policy"
)

func init() { policy.Serve(sjf.SJF{}) }

func main() {}
