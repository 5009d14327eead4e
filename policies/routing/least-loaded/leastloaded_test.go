package leastloaded_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/policytest"
	leastloaded "github.com/kiln-gpu/kiln/policies/routing/least-loaded"
)

func TestCases(t *testing.T) { policytest.Run(t, "routing.least-loaded", leastloaded.New()) }
