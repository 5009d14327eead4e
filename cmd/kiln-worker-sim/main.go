// Command kiln-worker-sim is kiln's reference worker: it speaks the worker
// protocol on fd 3, really maps and checksums model files, and executes
// ComfyUI workflows by charging time from the cost model (internal/cost)
// instead of running a GPU. See README.md.
package main

import "os"

func main() {
	os.Exit(run(os.Getenv))
}
