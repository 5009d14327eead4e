// Command kiln-storage-fs is kiln's storage plugin for a local directory tree
// laid out as ComfyUI's models directory. See README.md.
package main

import (
	"os"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

func main() {
	plugin.Serve(newFS(os.Getenv("KILN_PLUGIN_ROOT"), os.Getenv("KILN_PLUGIN_HASH") != "false"))
}
