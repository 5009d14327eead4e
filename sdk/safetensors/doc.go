// Package safetensors reads the header of a safetensors file, for kiln's
// model loaders and for anyone writing a loader plugin.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of
// JSON mapping every tensor's name to its dtype, shape and data_offsets (a
// byte range relative to the data section, which starts at 8+N), plus an
// optional "__metadata__" map of strings, then the tensor data. The format is
// a public standard (github.com/huggingface/safetensors); this package is its
// one parser in kiln, so that the kernel and the plugins agree on which files
// are valid.
//
// Parse checks what every file must satisfy: a bounded header length, one
// JSON object with no duplicate names and nothing after it but spaces, a
// known dtype for every tensor, two data_offsets in order, a byte length that
// matches shape × element size, and no two tensors overlapping. It accepts
// gaps between tensors and bytes after the last one, as the reference
// implementation does; CheckContiguous refuses them too, for readers that
// want every byte of the file accounted for.
//
// A loader plugin that is handed only the first bytes of a file asks for
// more with HeadSize:
//
//	n, err := safetensors.HeadSize(head, size) // 8 + the header length
//	if err == nil && int64(len(head)) < n {
//		return plugin.ModelInfo{NeedBytes: n}, nil
//	}
//	h, err := safetensors.Parse(head, size)
//
// and one with the file at hand reads it whole:
//
//	h, err := safetensors.Read(f, size)
//	for _, t := range h.Tensors {
//		fmt.Println(t.Name, t.DType, t.Shape, h.DataOffset+t.Begin)
//	}
//
// Every error about a malformed file wraps ErrFormat.
//
// This package never imports the kernel.
package safetensors
