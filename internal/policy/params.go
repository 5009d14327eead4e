package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// ErrUnknownParam is wrapped by errors about a parameter the policy does
// not declare; the message lists the ones it does.
var ErrUnknownParam = errors.New("unknown parameter")

// declared lists a version's parameters for messages: "a (int, 0..10),
// b (bool)", or "none".
func declared(ps []abi.Param) string {
	if len(ps) == 0 {
		return "none"
	}
	var parts []string
	for _, p := range ps {
		if p.Type == abi.ParamBool {
			parts = append(parts, p.Name+" (bool)")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (%s, %v..%v)", p.Name, p.Type, p.Min, p.Max))
	}
	return strings.Join(parts, ", ")
}

// withParams returns a copy of v's values with set applied, or an error
// naming the first value that is unknown or fails its declared type and
// bounds. Nothing is applied unless every value is valid, so that a
// request setting several values never leaves some of them changed.
func (v *version) withParams(set map[string]float64) ([]float64, error) {
	vals := slices.Clone(*v.values.Load())
	// Sorted, so that the error for a request with several bad values is
	// always about the same one.
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		i := slices.IndexFunc(v.params, func(p abi.Param) bool { return p.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("param %s of %s: %w; it declares: %s", n, v.ref(), ErrUnknownParam, declared(v.params))
		}
		if err := v.params[i].Check(set[n]); err != nil {
			return nil, fmt.Errorf("%s: %w", v.ref(), err)
		}
		vals[i] = set[n]
	}
	return vals, nil
}
