package catalog

import (
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// ConverterFor returns the loader plugin that reads model id when it can
// convert it (sdk.Converter), else nil: the tiers convert a model through
// it (tier.ConverterSource). A directory catalog has no plugins.
func (c *Catalog) ConverterFor(id string) sdk.Converter {
	if c.set == nil || c.set.loader == nil {
		return nil
	}
	if cv, ok := c.set.loader(id).(sdk.Converter); ok {
		return cv
	}
	return nil
}
