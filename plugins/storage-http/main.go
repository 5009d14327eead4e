// Command kiln-storage-http is kiln's storage plugin for any HTTP server
// that answers range requests. See README.md.
//
// Run as `kiln-storage-http index DIR` it prints the index.json for DIR
// instead of serving as a plugin.
package main

import (
	"fmt"
	"os"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "index" {
		if err := writeIndex(os.Stdout, os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "kiln-storage-http:", err)
			os.Exit(1)
		}
		return
	}
	plugin.Serve(newHTTPStorage(os.Getenv("KILN_PLUGIN_URL"), os.Getenv("KILN_PLUGIN_INDEX")))
}
