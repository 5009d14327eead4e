// Package s3fifo is the built-in eviction policy "s3fifo" (Yang et al.,
// "FIFO queues are all you need for cache eviction", SOSP'23): a small FIFO
// S (10% of the capacity) that filters one-hit wonders, a main FIFO M with
// reinsertion of entries used since they were last looked at, and a ghost
// queue G of recently evicted models; a model found in G goes straight to M.
//
// The host gives the policy the ghost queue and a per-entry tag; the queue
// membership, M's order and the frequency base live in the tag:
//
//	bit 63      classified (0: a new entry)
//	bit 62      in M
//	bits 32..61 M order (State[0] is the next number)
//	bits 0..31  hit count at the last reinsertion (frequency = hits - base, at most 3)
//
// Huge objects: an entry larger than S's share stays in S while it is S's
// only entry (otherwise the policy would evict every large model right
// after loading it); M gives room instead.
package s3fifo

import (
	"github.com/kiln-gpu/kiln/sdk/policy"
)

const (
	classified = 1 << 63
	inMain     = 1 << 62
	orderMask  = 1<<30 - 1
)

// S3FIFO is the policy.
type S3FIFO struct{}

var (
	_ policy.Evictor       = (*S3FIFO)(nil)
	_ policy.ParamDeclarer = (*S3FIFO)(nil)
)

// New returns the policy.
func New() *S3FIFO { return &S3FIFO{} }

// Params declares "small_ratio" (S's share of the capacity) and "prefetch".
func (*S3FIFO) Params() []policy.Param {
	return []policy.Param{
		{Name: "small_ratio", Type: policy.ParamFloat, Default: 0.1, Min: 0.01, Max: 0.5},
		{Name: "prefetch", Type: policy.ParamBool, Default: 1, Min: 0, Max: 1},
	}
}

// Evict runs S3-FIFO's eviction loop over the entries until Need is covered.
func (*S3FIFO) Evict(in *policy.EvictionInput, out *policy.EvictionOutput) policy.Status {
	n := len(in.Entries)
	tags := make([]uint64, n)
	changed := make([]bool, n)
	gone := make([]bool, n)
	next := in.State[0]
	capacity := in.Free
	var sSize uint64
	for i, e := range in.Entries {
		capacity += e.Bytes
		t := e.Tag
		if t&classified == 0 {
			t = classified
			for _, g := range in.Ghosts {
				if g.Model == e.Model && g.Ago > e.SinceInsert {
					t |= inMain | (next&orderMask)<<32 | uint64(e.Hits)
					next++
					break
				}
			}
			changed[i] = true
		}
		tags[i] = t
		if t&inMain == 0 {
			sSize += e.Bytes
		}
	}
	sTarget := uint64(float64(capacity) * in.Param(0, 0.1))
	freq := func(i int) uint64 {
		return min(3, uint64(in.Entries[i].Hits)-min(uint64(in.Entries[i].Hits), tags[i]&0xffffffff))
	}
	free := in.Free
	for iter := 0; free < in.Need && iter < 4*n+4; iter++ {
		// Oldest unpinned entry of S, oldest of M, and the counts in S.
		s, m, sCount := -1, -1, 0
		for i, e := range in.Entries {
			if gone[i] || e.Pinned {
				continue
			}
			if tags[i]&inMain == 0 {
				sCount++
				if s < 0 || e.SinceInsert > in.Entries[s].SinceInsert {
					s = i
				}
			} else if m < 0 || (tags[i]>>32)&orderMask < (tags[m]>>32)&orderMask {
				m = i
			}
		}
		if s < 0 && m < 0 {
			break
		}
		// A lone S entry larger than S's share stays (huge objects must be
		// admitted); otherwise S gives while it is at or above its share.
		fromS := s >= 0 && (m < 0 || sSize >= sTarget && !(sCount == 1 && in.Entries[s].Bytes > sTarget))
		if fromS {
			if freq(s) > 0 {
				// Used while in S: promote to M's tail.
				tags[s] = classified | inMain | (next&orderMask)<<32 | uint64(in.Entries[s].Hits)
				next++
				sSize -= in.Entries[s].Bytes
				changed[s] = true
				continue
			}
			gone[s] = true
			sSize -= in.Entries[s].Bytes
			free += in.Entries[s].Bytes
			out.Victims = append(out.Victims, uint32(s))
			continue
		}
		if f := freq(m); f > 0 {
			// Reinsert at M's tail with one use less.
			base := uint64(in.Entries[m].Hits) - (f - 1)
			tags[m] = classified | inMain | (next&orderMask)<<32 | base
			next++
			changed[m] = true
			continue
		}
		gone[m] = true
		free += in.Entries[m].Bytes
		out.Victims = append(out.Victims, uint32(m))
	}
	if free < in.Need {
		out.Victims = out.Victims[:0]
		return policy.StatusNoDecision
	}
	for i := range tags {
		if changed[i] && !gone[i] {
			out.Tags = append(out.Tags, policy.TagUpdate{Entry: uint32(i), Tag: tags[i]})
		}
	}
	out.State[0] = next
	if in.Param(1, 1) != 0 {
		policy.FillPrefetch(in, out)
	}
	return policy.StatusOK
}
