package plugin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	goplugin "github.com/hashicorp/go-plugin"
)

// memStorage serves one object from memory; it has no FetchTo.
type memStorage struct{ data []byte }

var _ Storage = memStorage{}

func (s memStorage) List(context.Context, string) ([]Object, error) {
	return []Object{{Key: "m", Size: int64(len(s.data))}}, nil
}

func (s memStorage) Stat(context.Context, string) (Object, error) {
	return Object{Key: "m", Size: int64(len(s.data))}, nil
}

func (s memStorage) Open(_ context.Context, _ string, offset, length int64) (io.ReadCloser, error) {
	b := s.data[offset:]
	if length > 0 {
		b = b[:length]
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// memFetcher adds FetchTo to memStorage.
type memFetcher struct{ memStorage }

var _ Fetcher = memFetcher{}

func (s memFetcher) FetchTo(ctx context.Context, key string, offset, length int64, path string) (int64, error) {
	f, err := CreateFetchFile(path)
	if err != nil {
		return 0, err
	}
	rc, _ := s.Open(ctx, key, offset, length)
	n, err := io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// dialStorage serves impl in process and returns the host side.
func dialStorage(t *testing.T, impl Storage) *GRPCStorage {
	t.Helper()
	client, _ := goplugin.TestPluginGRPCConn(t, false, map[string]goplugin.Plugin{KindStorage: &StoragePlugin{Impl: impl}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(KindStorage)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(*GRPCStorage)
}

func TestGRPCStorageFetchTo(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	for _, tc := range []struct {
		name            string
		impl            Storage
		wantUnsupported bool
	}{
		{name: "fetcher", impl: memFetcher{memStorage{data}}},
		{name: "without fetcher", impl: memStorage{data}, wantUnsupported: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialStorage(t, tc.impl)
			dst := filepath.Join(t.TempDir(), "out")
			n, err := c.FetchTo(context.Background(), "m", 10, 100, dst)
			if tc.wantUnsupported {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("FetchTo err = %v, want ErrUnsupported", err)
				}
				return
			}
			got, rerr := os.ReadFile(dst)
			if err != nil || rerr != nil || n != 100 || !bytes.Equal(got, data[10:110]) {
				t.Fatalf("FetchTo = %d, %v (file %d bytes, %v); want 100 bytes", n, err, len(got), rerr)
			}
		})
	}
}

func TestCreateFetchFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("stale bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(regular, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		path    string
		wantErr bool
	}{
		{name: "existing regular", path: regular},
		{name: "new", path: filepath.Join(dir, "new")},
		{name: "relative", path: "relative", wantErr: true},
		{name: "symlink", path: link, wantErr: true},
		{name: "directory", path: dir, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := CreateFetchFile(tc.path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("CreateFetchFile(%q) err = %v, wantErr %v", tc.path, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			defer f.Close()
			if st, err := f.Stat(); err != nil || st.Size() != 0 {
				t.Fatalf("file not truncated: %v, %v", st, err)
			}
		})
	}
	if b, _ := os.ReadFile(regular); len(b) != 0 {
		t.Fatalf("regular file not truncated: %q", b)
	}
}
