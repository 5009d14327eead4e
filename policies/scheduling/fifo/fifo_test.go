package fifo_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/policytest"
	"github.com/kiln-gpu/kiln/policies/scheduling/fifo"
)

func TestCases(t *testing.T) { policytest.Run(t, "scheduling.fifo", fifo.New()) }
