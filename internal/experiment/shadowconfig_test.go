package experiment

import "testing"

func TestShadowConfig(t *testing.T) {
	if err := (ShadowConfig{Policies: []string{"gdsf", "mine@3"}}).Validate(); err != nil {
		t.Error(err)
	}
	if err := (ShadowConfig{Policies: []string{"Bad Name"}}).Validate(); err == nil {
		t.Error("bad name accepted")
	}
	if (ShadowConfig{Policies: []string{"off"}}).Enabled() || !(ShadowConfig{}).Enabled() {
		t.Error("Enabled")
	}
}
