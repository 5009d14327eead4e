//go:build unix

package plugin

import "syscall"

// fetchOpenFlags make CreateFetchFile fail on a symlink instead of following
// it, and on a FIFO without a reader instead of blocking.
const fetchOpenFlags = syscall.O_NOFOLLOW | syscall.O_NONBLOCK
