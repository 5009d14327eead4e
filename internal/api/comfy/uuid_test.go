package comfy

import (
	"regexp"
	"testing"
	"time"
)

// TestNewUUIDIsVersion7AndGrowsWithTime: generated prompt ids are UUIDs
// (version 7, RFC 9562 variant) whose order is their time order, which is
// what keeps the job index's inserts at its right edge.
func TestNewUUIDIsVersion7AndGrowsWithTime(t *testing.T) {
	form := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	prev := newUUID()
	seen := map[string]bool{prev: true}
	for range 20 {
		time.Sleep(2 * time.Millisecond)
		id := newUUID()
		if !form.MatchString(id) {
			t.Fatalf("%q is not a version 7 UUID", id)
		}
		if id <= prev {
			t.Fatalf("%q, made after %q, sorts before it", id, prev)
		}
		if seen[id] {
			t.Fatalf("%q twice", id)
		}
		seen[id] = true
		prev = id
	}
}
