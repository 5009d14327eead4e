package sim

import (
	"fmt"
	"slices"

	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// applyParams sets Config.Params on the host's active policies, in sorted
// order so that an error names the same parameter every run.
func applyParams(h *policy.Host, params map[string]map[string]float64) error {
	kinds := make([]string, 0, len(params))
	for k := range params {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, ks := range kinds {
		k, err := abi.ParseKind(ks)
		if err != nil {
			return fmt.Errorf("sim: params: %w", err)
		}
		names := make([]string, 0, len(params[ks]))
		for n := range params[ks] {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			if err := h.SetParam(k, n, params[ks][n]); err != nil {
				return fmt.Errorf("sim: params: %w", err)
			}
		}
	}
	return nil
}
