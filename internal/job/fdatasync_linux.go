package job

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync makes f's data durable without its modification time: one
// device flush, where fsync may add a journal commit for the inode.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
