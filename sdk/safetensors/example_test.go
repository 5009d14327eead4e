package safetensors_test

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/kiln-gpu/kiln/sdk/safetensors"
)

func Example() {
	// A file with one 2×2 F16 tensor: the header length, the JSON header,
	// then 8 bytes of data.
	header := `{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}`
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	file = append(file, header...)
	file = append(file, make([]byte, 8)...)

	h, err := safetensors.Read(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range h.Tensors {
		fmt.Println(t.Name, t.DType, t.Shape, "at byte", h.DataOffset+t.Begin)
	}
	fmt.Println("contiguous:", h.CheckContiguous(int64(len(file))) == nil)
	// Output:
	// w F16 [2 2] at byte 95
	// contiguous: true
}
