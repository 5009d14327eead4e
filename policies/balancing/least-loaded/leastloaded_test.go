package leastloaded_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/balancing/least-loaded"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "balancing.least-loaded", leastloaded.New()) }
