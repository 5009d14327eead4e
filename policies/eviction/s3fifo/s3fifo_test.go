package s3fifo_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/eviction/s3fifo"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "eviction.s3fifo", s3fifo.New()) }
