// Package plugin starts and supervises kiln's process plugins (DESIGN §4.3):
// storage backends and model loaders built against sdk/plugin.
//
// A Host launches each plugin binary with hashicorp/go-plugin over gRPC only,
// checks the binary's sha256 before every start (SecureConfig), gives it only
// the environment kiln chooses (SkipHostEnv), asks the kernel to kill it if
// kiln dies (Linux parent-death signal) and kills it on Close. go-plugin does
// not restart plugins that die; the Host does, with exponential backoff, and
// retries the idempotent call that found the plugin dead — including an Open
// stream, which resumes at the offset it had reached.
//
//	h := plugin.NewHost(cfg, clk, log)
//	defer h.Close()
//	st, err := h.Storage("models", "kiln-storage-fs", map[string]string{"root": "/models"})
//	objs, err := st.List(ctx, "")
package plugin
