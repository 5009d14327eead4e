// Command kiln-loader-safetensors is kiln's model loader plugin for
// safetensors files. See README.md.
package main

import "github.com/kiln-gpu/kiln/sdk/plugin"

func main() { plugin.Serve(loader{}) }
