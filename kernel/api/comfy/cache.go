package comfy

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/kernel/clock"
	"github.com/kiln-gpu/kiln/kernel/job"
	"github.com/kiln-gpu/kiln/kernel/workflow"
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

// canonical computes the hash of every node an output depends on.
func canonical(graph map[string]any) (map[string]string, []string) {
	hashes := map[string]string{}
	var hashOf func(id string, depth int) string
	hashOf = func(id string, depth int) string {
		if h, ok := hashes[id]; ok {
			return h
		}
		if depth > 10000 {
			return "cycle"
		}
		node, _ := graph[id].(map[string]any)
		class, _ := node["class_type"].(string)
		inputs, _ := node["inputs"].(map[string]any)
		names := make([]string, 0, len(inputs))
		for n := range inputs {
			names = append(names, n)
		}
		sort.Strings(names)
		sum := sha256.New()
		fmt.Fprintf(sum, "class=%q;", class)
		for _, n := range names {
			v := inputs[n]
			if arr, ok := v.([]any); ok && len(arr) == 2 {
				if src, ok := linkID(arr[0]); ok {
					fmt.Fprintf(sum, "%q=link(%s,%v);", n, hashOf(src, depth+1), arr[1])
					continue
				}
			}
			b, _ := json.Marshal(v)
			fmt.Fprintf(sum, "%q=%s;", n, b)
		}
		h := hex.EncodeToString(sum.Sum(nil))
		hashes[id] = h
		return h
	}
	var outs []string
	for id, n := range graph {
		node, _ := n.(map[string]any)
		class, _ := node["class_type"].(string)
		if isOutputClass(class) {
			outs = append(outs, id)
			hashOf(id, 0)
		}
	}
	sort.Strings(outs)
	return hashes, outs
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

func linkID(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case float64:
		return fmt.Sprint(x), true
	}
	return "", false
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
// of every node an output depends on, and the output nodes. A prompt's key
// is computed once, at submit, from the graph the API decoded (lookup), and
// kept by the hub until the prompt ends (store).
type cacheKey struct {
	hashes map[string]string
	outs   []string
	// uncacheable graphs must run every time (uncacheable).
	uncacheable bool
}

// keyOf computes a decoded graph's cacheKey; nil graph, nil key.
func keyOf(graph map[string]any) *cacheKey {
	if graph == nil {
		return nil
	}
	if uncacheable(graph) {
		return &cacheKey{uncacheable: true}
	}
	hashes, outs := canonical(graph)
	return &cacheKey{hashes: hashes, outs: outs}
}

// keyOfStored computes the key of a stored workflow: a job whose key was
// not kept at submit (a /v1/jobs job, one recovered after a restart, or
// one another node of a cluster took) costs this one decode at its end.
func keyOfStored(raw json.RawMessage) *cacheKey {
	g, err := workflow.Decode(raw)
	if err != nil {
		return nil
	}
	return keyOf(g)
}

// on reports whether the cache is on.
func (c *resultCache) on() bool { return c != nil && c.enabled }

// store records a finished job's outputs under k, the key of its graph
// (nil: computed here from the stored workflow).
func (c *resultCache) store(j *job.Job, k *cacheKey) {
	if !c.on() || j.State != job.Done || len(j.Outputs) == 0 {
		return
	}
	if k == nil {
		k = keyOfStored(j.Workflow)
	}
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

// lookup finds a prompt's outputs, renamed to its node ids. It also
// returns the prompt's key (nil when the cache is off), for store when the
// prompt runs.
func (c *resultCache) lookup(req *PromptRequest) (*cacheHit, *cacheKey) {
	if !c.on() {
		return nil, nil
	}
	var k *cacheKey
	if req.Graph != nil {
		k = keyOf(req.Graph.Map()) // the graph DecodePrompt decoded: no second decode
	} else {
		k = keyOfStored(req.Workflow)
	}
	if k == nil || k.uncacheable {
		c.count("miss")
		return nil, k
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
		return nil, k
	}
	hit := &cacheHit{}
	for _, id := range outs {
		for _, o := range e.byHash[hashes[id]] {
			if _, err := os.Stat(filepath.Join(c.outputDir, filepath.FromSlash(o.Subfolder), o.Filename)); err != nil {
				c.count("stale")
				return nil, k // the files are gone: run again
			}
			o.Node = id
			hit.outputs = append(hit.outputs, o)
		}
	}
	if len(hit.outputs) == 0 {
		c.count("miss")
		return nil, k
	}
	c.count("hit")
	return hit, k
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
