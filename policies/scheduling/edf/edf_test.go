package edf_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/policytest"
	"github.com/kiln-gpu/kiln/policies/scheduling/edf"
)

func TestCases(t *testing.T) { policytest.Run(t, "scheduling.edf", edf.New()) }
