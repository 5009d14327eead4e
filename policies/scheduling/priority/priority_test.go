package priority_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/policytest"
	"github.com/kiln-gpu/kiln/policies/scheduling/priority"
)

func TestCases(t *testing.T) { policytest.Run(t, "scheduling.priority", priority.New()) }
