//go:build !wasip1

package policy

import "fmt"

// typeName names a policy's Go type in error messages (natively only: fmt
// stays out of WASM builds, see itoa).
func typeName(p any) string { return fmt.Sprintf("%T", p) }
