package affinity_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/balancing/affinity"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "balancing.affinity", affinity.New()) }
