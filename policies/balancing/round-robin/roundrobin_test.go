package roundrobin_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/balancing/round-robin"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "balancing.round-robin", roundrobin.New()) }
