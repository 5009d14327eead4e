package dispatch

import (
	"time"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/tier"
)

// loadCoster prices making a model resident on a worker that lacks it
// (ABI §4.2 load_cost): from the fastest tier holding its bytes, at the
// rates the tiers have measured where they have measured one and the cost
// model's otherwise. A model in host RAM costs only its host→device copy,
// one on local disk a read first, one only in remote storage a fetch
// before that; without tiers every load is priced from disk, as the cost
// model does.
type loadCoster struct {
	cost  cost.Config
	tiers *tier.Manager
	// Measured rates, bytes/s (0 where nothing was measured yet).
	diskToRAM, remoteToDisk float64
}

func (d *Dispatcher) loadCoster() loadCoster {
	lc := loadCoster{cost: d.opts.Cost, tiers: d.opts.Tiers}
	if lc.tiers != nil {
		st := lc.tiers.Stats() // vram, ram, disk, remote
		lc.diskToRAM = st[1].BandwidthBytesPerS
		lc.remoteToDisk = st[3].BandwidthBytesPerS
	}
	return lc
}

func (lc loadCoster) of(e catalog.Entry) time.Duration {
	if lc.tiers == nil {
		return lc.cost.LoadTime(e.Family, e.NominalBytes, cost.Device{})
	}
	t := lc.cost.TransferTime(e.NominalBytes, cost.Device{})
	inRAM, onDisk := lc.tiers.Holds(e.ID)
	if inRAM {
		return t
	}
	t += lc.read(e.NominalBytes, lc.diskToRAM, lc.cost.DiskBytesPerS)
	if !onDisk {
		// Remote storage has no configured rate; until a fetch has been
		// measured it is priced like the disk, which underestimates it.
		t += lc.read(e.NominalBytes, lc.remoteToDisk, lc.cost.DiskBytesPerS)
	}
	return t
}

func (lc loadCoster) read(bytes int64, measured, configured float64) time.Duration {
	if measured > 0 {
		return lc.cost.MoveTime(bytes, measured)
	}
	return lc.cost.MoveTime(bytes, configured)
}
