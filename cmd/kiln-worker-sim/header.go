package main

import (
	"io"

	"github.com/kiln-gpu/kiln/internal/modelfile"
)

// modelInfo is what a load learns from a model file's header.
type modelInfo struct {
	nominal int64  // the size the file stands for (synthetic files are scaled down)
	family  string // kiln.family metadata, empty when absent
	dtype   string // the dtype that holds most of the tensor bytes
}

// readModelInfo reads the safetensors header of a model file. Files in other
// formats (.ckpt, .pth) give an error; the caller then charges their size.
func readModelInfo(r io.ReaderAt, size int64) (modelInfo, error) {
	h, err := modelfile.ReadHeader(r, size)
	if err != nil {
		return modelInfo{}, err
	}
	by := map[string]int64{}
	dtype := ""
	for _, t := range h.Tensors {
		by[t.DType] += t.Bytes()
		if dtype == "" || by[t.DType] > by[dtype] || (by[t.DType] == by[dtype] && t.DType < dtype) {
			dtype = t.DType
		}
	}
	return modelInfo{nominal: h.NominalBytes(), family: h.Family(), dtype: dtype}, nil
}
