package comfy

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// resultCache answers a prompt whose canonical graph matches a finished
// one. A node's canonical hash covers its class, its literal inputs (so the
// seed) and the hashes of the nodes it links to, never its id; a graph's key
// is the sorted hashes of its output nodes. Entries are bounded in number
// and age, and a hit is used only while its files still exist.
type resultCache struct {
	enabled   bool
	max       int
	maxAge    time.Duration
	clk       clock.Clock
	outputDir string
	// count counts a lookup's result (kiln_result_cache_lookups_total):
	// "hit", "miss", or "stale" (matched, but too old or its files gone).
	count func(result string)

	mu      sync.Mutex
	entries map[string]*list.Element
	order   *list.List // front: newest
}

type cacheEntry struct {
	key    string
	at     time.Time
	byHash map[string][]job.Output // output node hash → its files
}

// cacheHit is a prompt's outputs, renamed to its node ids.
type cacheHit struct {
	outputs []job.Output
}

func newResultCache(cfg CacheConfig, clk clock.Clock, outputDir string, count func(result string)) *resultCache {
	if count == nil {
		count = func(string) {}
	}
	return &resultCache{enabled: cfg.Enabled != nil && *cfg.Enabled && cfg.MaxEntries > 0 && outputDir != "",
		max: cfg.MaxEntries, maxAge: cfg.MaxAge, clk: clk, outputDir: outputDir, count: count,
		entries: map[string]*list.Element{}, order: list.New()}
}

// uncacheable reports whether a graph must run every time: one with a
// SaveImageWebsocket node, which sends its images to the client as it runs
// and keeps no files (its IS_CHANGED is the time in ComfyUI, so ComfyUI
// runs it again too).
func uncacheable(graph map[string]any) bool {
	for _, n := range graph {
		node, _ := n.(map[string]any)
		if class, _ := node["class_type"].(string); class == "SaveImageWebsocket" {
			return true
		}
	}
	return false
}

func graphKey(hashes map[string]string, outs []string) string {
	hs := make([]string, 0, len(outs))
	for _, o := range outs {
		hs = append(hs, hashes[o])
	}
	sort.Strings(hs)
	sum := sha256.Sum256([]byte(fmt.Sprint(hs)))
	return hex.EncodeToString(sum[:])
}

// cacheKey is what the result cache needs of a graph: the canonical hash
// of each output node (workflow.OutputHashes), and the output nodes. A
// job's key comes with its Facts, computed once at submit.
type cacheKey struct {
	hashes map[string]string
	outs   []string
	// uncacheable graphs must run every time (uncacheable).
	uncacheable bool
}

func newCacheKey(hs []workflow.NodeHash, uncacheable bool) *cacheKey {
	k := &cacheKey{hashes: make(map[string]string, len(hs)), outs: make([]string, 0, len(hs)), uncacheable: uncacheable}
	for _, h := range hs {
		k.hashes[h.Node] = h.Hash
		k.outs = append(k.outs, h.Node)
	}
	return k
}

// keyOfFacts is the key a job's Facts carry.
func keyOfFacts(f *workflow.Facts) *cacheKey {
	ws := false
	for _, c := range f.Classes {
		ws = ws || c == "SaveImageWebsocket"
	}
	return newCacheKey(f.OutputHashes, ws)
}

// keyOfJob is a job's key: from its Facts, else (a job whose Facts this
// process does not have: one another node of a cluster ran) from one
// decode of its stored workflow. Nil when the workflow is unreadable.
func keyOfJob(j *job.Job) *cacheKey {
	if j.Facts != nil {
		return keyOfFacts(j.Facts)
	}
	g, err := workflow.Decode(j.Workflow)
	if err != nil || g == nil {
		return nil
	}
	return newCacheKey(workflow.OutputHashes(g), uncacheable(g))
}

// on reports whether the cache is on.
func (c *resultCache) on() bool { return c != nil && c.enabled }

// store records a finished job's outputs under its graph's key.
func (c *resultCache) store(j *job.Job) {
	if !c.on() || j.State != job.Done || len(j.Outputs) == 0 {
		return
	}
	k := keyOfJob(j)
	if k == nil || k.uncacheable {
		return
	}
	hashes := k.hashes
	e := &cacheEntry{key: graphKey(hashes, k.outs), at: c.clk.Now(), byHash: map[string][]job.Output{}}
	for _, o := range j.Outputs {
		h := hashes[o.Node]
		e.byHash[h] = append(e.byHash[h], o)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[e.key]; ok {
		c.order.Remove(old)
	}
	c.entries[e.key] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*cacheEntry).key)
	}
}

// lookup finds the outputs of a prompt whose graph has Facts f, renamed
// to its node ids.
func (c *resultCache) lookup(f *workflow.Facts) *cacheHit {
	if !c.on() {
		return nil
	}
	k := keyOfFacts(f)
	if k.uncacheable {
		c.count("miss")
		return nil
	}
	hashes, outs := k.hashes, k.outs
	key := graphKey(hashes, outs)
	c.mu.Lock()
	el, ok := c.entries[key]
	var e *cacheEntry
	if !ok {
		c.count("miss")
	} else {
		e = el.Value.(*cacheEntry)
		if c.maxAge > 0 && c.clk.Since(e.at) > c.maxAge {
			c.order.Remove(el)
			delete(c.entries, key)
			e = nil
			c.count("stale")
		}
	}
	c.mu.Unlock()
	if e == nil {
		return nil
	}
	hit := &cacheHit{}
	for _, id := range outs {
		for _, o := range e.byHash[hashes[id]] {
			if _, err := os.Stat(filepath.Join(c.outputDir, filepath.FromSlash(o.Subfolder), o.Filename)); err != nil {
				c.count("stale")
				return nil // the files are gone: run again
			}
			o.Node = id
			hit.outputs = append(hit.outputs, o)
		}
	}
	if len(hit.outputs) == 0 {
		c.count("miss")
		return nil
	}
	c.count("hit")
	return hit
}

// clear empties the cache.
func (c *resultCache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = map[string]*list.Element{}
	c.order.Init()
}
