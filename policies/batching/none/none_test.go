package none_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/batching/none"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "batching.none", none.New()) }
