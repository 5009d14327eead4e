package samemodel_test

import (
	"testing"

	"github.com/kiln-gpu/kiln/policies/batching/same-model"
	"github.com/kiln-gpu/kiln/policies/policytest"
)

func TestCases(t *testing.T) { policytest.Run(t, "batching.same-model", samemodel.New()) }
