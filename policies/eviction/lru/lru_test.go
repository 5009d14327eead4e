package lru_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/eviction/lru"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "eviction.lru", lru.New()) }
