package tier

import (
	"os"

	"golang.org/x/sys/unix"
)

// writtenUpTo returns where the first hole at or after off starts in f (the
// file's size when there is none): the bytes below it have been written.
// A sparse region, or one preallocated with fallocate and not yet written,
// is a hole. ok is false where the file system cannot say.
func writtenUpTo(f *os.File, off int64) (end int64, ok bool) {
	// Seek moves f's offset, which nothing here uses: the reads are ReadAt.
	end, err := f.Seek(off, unix.SEEK_HOLE)
	return end, err == nil
}
