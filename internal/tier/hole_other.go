//go:build !linux

package tier

import "os"

// writtenUpTo cannot find holes here: every byte below the file's size
// counts as written.
func writtenUpTo(*os.File, int64) (int64, bool) { return 0, false }
