package gdsf_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/eviction/gdsf"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "eviction.gdsf", gdsf.New()) }
