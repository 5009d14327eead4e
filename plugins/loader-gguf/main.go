// Command kiln-loader-gguf is kiln's model loader plugin for GGUF files
// (llama.cpp's format). See README.md.
package main

import "github.com/kiln-gpu/kiln/sdk/plugin"

func main() { plugin.Serve(loader{}) }
