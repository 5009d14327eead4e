package catalog

import "github.com/kiln-gpu/kiln/internal/l4"

// Source is where a model's bytes live in L4: the storage backend that
// holds them, its key, size and expected digest. The tiers (internal/tier)
// fetch from it; Catalog.Resolve answers it. It is l4.Source, a leaf's
// type, so that the tiers take it without importing the catalog.
type Source = l4.Source
