// Package modelfile reads and writes real safetensors model files.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of
// JSON describing every tensor (dtype, shape, byte range) plus optional
// string metadata under "__metadata__", then the tensor data. ReadHeader
// parses and checks that layout with sdk/safetensors (the parser the loader
// plugins use too) and further requires the tensors to fill the file
// exactly; it is what the L3/L2 tiers and the model loader use to learn a
// file's size, dtypes and family without reading the data.
//
// Where no real weights are at hand (laptops, CI, the simulator), Synth writes
// stand-in files: valid safetensors with realistic tensor names, dtypes and
// shapes for the model family, filled with deterministic pseudo-random bytes,
// and scaled down to a fraction of the real size. The metadata records the
// real ("nominal") size, so that the cost model can charge load times for the
// model the file stands for:
//
//	err := modelfile.SynthFile("models/checkpoints/sd_xl_base_1.0.safetensors", modelfile.Spec{
//		ID: "checkpoints/sd_xl_base_1.0.safetensors", Family: "sdxl",
//		NominalBytes: modelfile.NominalSize("sdxl", "sd_xl_base_1.0.safetensors"), Scale: 0.01,
//	})
//	h, err := modelfile.ReadHeader(f, size)
//	fmt.Println(h.Family(), h.NominalBytes()) // sdxl 6940000000
//
// SynthStore does the same for every model a workflow names, under a
// ComfyUI-style models directory.
package modelfile
