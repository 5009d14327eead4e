//go:build !unix

package plugin

// fetchOpenFlags is 0 where the platform has no O_NOFOLLOW; CreateFetchFile's
// Lstat check still refuses an existing symlink.
const fetchOpenFlags = 0
