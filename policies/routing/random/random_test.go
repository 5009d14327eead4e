package random_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/policytest"
	"github.com/kiln-gpu/kiln/policies/routing/random"
)

func TestCases(t *testing.T) { policytest.Run(t, "routing.random", random.New()) }
