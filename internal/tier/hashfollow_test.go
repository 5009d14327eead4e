//go:build linux

package tier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/policy"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// writerStorage is a storage backend whose FetchTo runs write on the target
// file, opened the way a plugin opens it (sdk.CreateFetchFile): the tests
// below write real files in the orders real plugins (and misbehaving ones)
// do, while the kernel hashes them.
type writerStorage struct {
	write func(path string) (int64, error)
}

func (w writerStorage) List(context.Context, string) ([]sdk.Object, error) { return nil, nil }
func (w writerStorage) Stat(context.Context, string) (sdk.Object, error) {
	return sdk.Object{}, sdk.ErrNotFound
}
func (w writerStorage) Open(context.Context, string, int64, int64) (io.ReadCloser, error) {
	return nil, errors.New("the test backend only fetches")
}
func (w writerStorage) FetchTo(_ context.Context, _ string, _, _ int64, path string) (int64, error) {
	return w.write(path)
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// inChunks writes data at its end, chunk bytes at a time, pausing between
// chunks so that the kernel's reader catches up with the writer and waits.
func inChunks(f *os.File, data []byte, chunk int, pause time.Duration) error {
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		if _, err := f.Write(data[off:end]); err != nil {
			return err
		}
		time.Sleep(pause)
	}
	return nil
}

func TestFetchIntoDigestIsTheFilesInEveryWriteOrder(t *testing.T) {
	const size = 9<<20 + 4321 // not a multiple of a page or of the reader's buffer
	want := randomBytes(size, 1)
	other := bytes.Clone(want)
	copy(other[:1<<20], randomBytes(1<<20, 2)) // same size, another first MiB

	srcFile := filepath.Join(t.TempDir(), "object.bin")
	if err := os.WriteFile(srcFile, want, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		// write fills the file at path; onDisk is what it holds afterwards.
		write  func(path string) (int64, error)
		onDisk []byte
		// wantErr: fetchInto must fail with ErrCorrupt (the writer's count
		// is not the file's).
		wantErr bool
	}{
		{name: "in order, in chunks smaller than the reader's buffer", onDisk: want,
			write: func(path string) (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				return size, inChunks(f, want, 300<<10+17, time.Millisecond)
			}},
		{name: "in order, one large write", onDisk: want,
			write: func(path string) (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				n, err := f.Write(want)
				return int64(n), err
			}},
		{name: "file to file (copy_file_range, as storage-fs does)", onDisk: want,
			write: func(path string) (int64, error) {
				src, err := os.Open(srcFile)
				if err != nil {
					return 0, err
				}
				defer src.Close()
				dst, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer dst.Close()
				return io.Copy(dst, src)
			}},
		{name: "out of order: the second half first", onDisk: want,
			write: func(path string) (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				half := size / 2
				if _, err := f.WriteAt(want[half:], int64(half)); err != nil {
					return 0, err
				}
				time.Sleep(30 * time.Millisecond) // the reader hashes the hole's zeros
				if _, err := f.WriteAt(want[:half], 0); err != nil {
					return 0, err
				}
				return size, nil
			}},
		{name: "preallocated to its size, then written in order", onDisk: want,
			write: func(path string) (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				if err := f.Truncate(size); err != nil {
					return 0, err
				}
				time.Sleep(10 * time.Millisecond)
				return size, inChunks(f, want, 1<<20, time.Millisecond)
			}},
		{name: "preallocated with fallocate, then written in order", onDisk: want,
			write: func(path string) (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
					// Not every file system allocates ahead: a sparse
					// preallocation instead.
					if err := f.Truncate(size); err != nil {
						return 0, err
					}
				}
				time.Sleep(10 * time.Millisecond)
				return size, inChunks(f, want, 1<<20, time.Millisecond)
			}},
		{name: "restarted: part written, truncated, written again", onDisk: want,
			write: func(path string) (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				if err := inChunks(f, want[:size*3/5], 1<<20, time.Millisecond); err != nil {
					return 0, err
				}
				f.Close()
				time.Sleep(20 * time.Millisecond)
				f, err = sdk.CreateFetchFile(path) // a restarted plugin's FetchTo
				if err != nil {
					return 0, err
				}
				defer f.Close()
				return size, inChunks(f, want, 1<<20, time.Millisecond)
			}},
		{name: "restarted: the expected bytes written, then other bytes of the same size", onDisk: other,
			// The candidate digest of what was first written is the expected
			// one; only noticing the restart keeps it from being taken for the
			// file's.
			write: func(path string) (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				if _, err := f.Write(want); err != nil {
					return 0, err
				}
				f.Close()
				time.Sleep(50 * time.Millisecond)
				f, err = sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				time.Sleep(50 * time.Millisecond)
				n, err := f.Write(other)
				return int64(n), err
			}},
		{name: "the writer reports more bytes than it wrote", onDisk: want[:size-1], wantErr: true,
			write: func(path string) (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				_, err = f.Write(want[:size-1])
				return size, err
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testManager(t)
			tmp, err := os.CreateTemp(m.disk.dir, ".tmp-*")
			if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			src := catalog.Source{Storage: writerStorage{write: tc.write}, Key: "k", Size: size, SHA256: digest(want)}
			n, sum, err := m.fetchInto(context.Background(), src, tmp)
			onDisk, rerr := os.ReadFile(tmp.Name())
			if rerr != nil {
				t.Fatal(rerr)
			}
			if !bytes.Equal(onDisk, tc.onDisk) {
				t.Fatalf("the writer left %d bytes that are not the case's", len(onDisk))
			}
			if tc.wantErr {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("fetchInto = %d, %s, %v; want ErrCorrupt", n, sum, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(onDisk)) || sum != digest(onDisk) {
				t.Fatalf("fetchInto = %d bytes, sha256 %s; the file holds %d bytes, sha256 %s",
					n, sum, len(onDisk), digest(onDisk))
			}
		})
	}
}

// TestHashWhileFetchedFollowsAnAppendingWriter checks the one-pass path
// itself: for a writer that appends (what storage-http and storage-fs do),
// the digest taken while it writes is the file's, with no second read.
func TestHashWhileFetchedFollowsAnAppendingWriter(t *testing.T) {
	for _, tc := range []struct {
		size, chunk int
		pause       time.Duration
	}{
		{size: 0, chunk: 1},
		{size: 1, chunk: 1},
		{size: 5<<20 + 3, chunk: 64<<10 + 1, pause: 0},
		{size: 3<<20 + 11, chunk: 256 << 10, pause: 2 * time.Millisecond},
		{size: 12 << 20, chunk: 4 << 20, pause: 5 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("%d bytes in %d-byte writes", tc.size, tc.chunk), func(t *testing.T) {
			data := randomBytes(tc.size, uint64(tc.size))
			path := filepath.Join(t.TempDir(), "f")
			tmp, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			defer tmp.Close()
			wrote, n, sum, err := hashWhileFetched(tmp, func() (int64, error) {
				f, err := sdk.CreateFetchFile(path)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				return int64(tc.size), inChunks(f, data, tc.chunk, tc.pause)
			})
			if err != nil {
				t.Fatal(err)
			}
			if wrote != int64(tc.size) || n != int64(tc.size) || sum != digest(data) {
				t.Fatalf("hashWhileFetched = wrote %d, hashed %d, %s; want %d, %s", wrote, n, sum, tc.size, digest(data))
			}
		})
	}
}

// TestHashWhileFetchedReturnsTheFetchError: a writer that fails is reported
// as failed, after it has returned.
func TestHashWhileFetchedReturnsTheFetchError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	tmp, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	boom := errors.New("connection reset")
	returned := false
	_, _, _, err = hashWhileFetched(tmp, func() (int64, error) {
		f, err := sdk.CreateFetchFile(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		_ = inChunks(f, randomBytes(1<<20, 3), 100<<10, time.Millisecond)
		returned = true
		return 1 << 20, boom
	})
	if !errors.Is(err, boom) || !returned {
		t.Fatalf("hashWhileFetched = %v (fetch returned: %v); want the fetch's error after it returned", err, returned)
	}
}

// TestFetchL3KeepsOnlyVerifiedBytes: through the tiers' own path, a writer
// that restarts and leaves other bytes than the catalog's digest is a
// corrupt fetch, and nothing is renamed into the disk tier.
func TestFetchL3KeepsOnlyVerifiedBytes(t *testing.T) {
	const size = 2<<20 + 1
	want := randomBytes(size, 4)
	other := bytes.Clone(want)
	other[0] ^= 0xff
	m := testManager(t)
	src := catalog.Source{Backend: "test", Key: "k", Size: size, SHA256: digest(want), Storage: writerStorage{write: func(path string) (int64, error) {
		f, err := sdk.CreateFetchFile(path)
		if err != nil {
			return 0, err
		}
		if _, err := f.Write(want); err != nil {
			return 0, err
		}
		f.Close()
		time.Sleep(50 * time.Millisecond)
		f, err = sdk.CreateFetchFile(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		time.Sleep(50 * time.Millisecond)
		n, err := f.Write(other)
		return int64(n), err
	}}}
	if err := m.fetchL3(context.Background(), "m", src); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("fetchL3 = %v; want ErrCorrupt", err)
	}
	left, err := os.ReadDir(m.disk.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("the disk tier holds %d files after a corrupt fetch", len(left))
	}

	src.Storage = writerStorage{write: func(path string) (int64, error) {
		f, err := sdk.CreateFetchFile(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		return size, inChunks(f, want, 512<<10, time.Millisecond)
	}}
	if err := m.fetchL3(context.Background(), "m", src); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(m.DiskPath(digest(want)))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the disk tier's file: %d bytes, %v; want the model's %d", len(got), err, size)
	}
}

// TestAcquireNeverLeasesBytesRewrittenInPlace: a writer that writes the
// model's bytes, and then, after the reader hashed them, rewrites some in
// place without truncating, leaves a disk-tier file whose recorded digest is
// not its own. The promotion into RAM verifies it: no worker is handed those
// bytes, the file is dropped, and a good fetch afterwards serves the model.
func TestAcquireNeverLeasesBytesRewrittenInPlace(t *testing.T) {
	const size = 3<<20 + 5
	want := randomBytes(size, 5)
	var fetches int
	src := catalog.Source{Backend: "test", Key: "k", Size: size, SHA256: digest(want), Storage: writerStorage{write: func(path string) (int64, error) {
		fetches++
		f, err := sdk.CreateFetchFile(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if _, err := f.Write(want); err != nil {
			return 0, err
		}
		if fetches == 1 {
			time.Sleep(50 * time.Millisecond)
			if _, err := f.WriteAt([]byte("rewritten"), 1<<20); err != nil {
				return 0, err
			}
		}
		return size, nil
	}}}
	m := testManagerFor(t, resolverFunc(func(context.Context, string) (catalog.Source, error) { return src, nil }))
	l, err := m.Acquire(context.Background(), "m")
	if err == nil {
		b, _ := os.ReadFile(l.Path())
		l.Release()
		if !bytes.Equal(b, want) {
			t.Fatalf("a lease on %d bytes that are not the model's", len(b))
		}
		// The rewrite was caught before the rename: fine too.
	} else if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Acquire = %v; want ErrCorrupt or the model's bytes", err)
	}
	l, err = m.Acquire(context.Background(), "m")
	if err != nil {
		t.Fatalf("Acquire after a good fetch: %v", err)
	}
	defer l.Release()
	if b, err := os.ReadFile(l.Path()); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("the lease's bytes: %d, %v; want the model's", len(b), err)
	}
}

type resolverFunc func(context.Context, string) (catalog.Source, error)

func (f resolverFunc) Resolve(ctx context.Context, id string) (catalog.Source, error) {
	return f(ctx, id)
}

func testManager(t *testing.T) *Manager { return testManagerFor(t, nil) }

func testManagerFor(t *testing.T, res Resolver) *Manager {
	t.Helper()
	data := t.TempDir()
	m, err := New(Config{Disk: DiskConfig{CapacityBytes: 1 << 30}, RAM: RAMConfig{CapacityBytes: 1 << 30, Dir: filepath.Join(data, "ram")}},
		res, Options{DataDir: data, Log: zerolog.Nop(), DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: policy.Native().NewEvictor()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}
