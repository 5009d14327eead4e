package demand_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/eviction/demand"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "eviction.demand", demand.New()) }
