// Package l4 names where a model's bytes live in L4, the storage backends
// under the tiers: the catalog answers it (catalog.Catalog.Resolve, whose
// catalog.Source is this Source) and the tiers fetch from it
// (internal/tier). It is a leaf, like the decision contract, so that the
// catalog and the tiers sit side by side instead of one above the other
// (docs/ARCHITECTURE.md, "Layers"): neither imports the other, and the
// dispatcher, which uses both, is one floor lower for it.
package l4

import (
	"context"
	"io"
)

// Reader is what the tiers ask of a storage backend: a stream of an
// object's bytes. A storage plugin (sdk/plugin.Storage) is one; the tiers
// also use its optional sdk/plugin.Fetcher, found by a type assertion. It
// is declared here with standard types alone because sdk/plugin carries
// its gRPC code, a floor that this package would otherwise add under the
// tiers.
type Reader interface {
	// Open streams length bytes of key from offset (length <= 0: to the
	// end).
	Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// Source is where one model's bytes live in L4: the storage backend that
// holds them, its key, size and expected digest.
type Source struct {
	Storage Reader
	// Backend names the storage backend, for errors and logs.
	Backend string
	Key     string
	Size    int64
	// SHA256 is the expected digest; "" means unknown (the first fetch's
	// digest is then recorded and later reads are checked against it).
	SHA256 string
}
