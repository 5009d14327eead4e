//go:build wasip1

package policy

// typeName is "value" in a WASM build, which leaves fmt out (see itoa);
// the native build of the same source names the type.
func typeName(any) string { return "value" }
