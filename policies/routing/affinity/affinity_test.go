package affinity_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/policytest"
	"github.com/kiln-gpu/kiln/policies/routing/affinity"
)

func TestCases(t *testing.T) { policytest.Run(t, "routing.affinity", affinity.New()) }
