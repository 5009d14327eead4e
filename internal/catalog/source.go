package catalog

import sdk "github.com/kiln-gpu/kiln/sdk/plugin"

// Source is where a model's bytes live in L4: the storage backend that
// holds them, its key, size and expected digest. The tiers (internal/tier)
// fetch from it; Catalog.Resolve answers it.
type Source struct {
	Storage sdk.Storage
	Backend string
	Key     string
	Size    int64
	// SHA256 is the expected digest; "" means unknown (the first fetch's
	// digest is then recorded and later reads are checked against it).
	SHA256 string
}
