package plugin

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
)

// Handshake is the one handshake between kiln and every plugin.
//
// Version history:
//   - 1: StorageBackend (List, Stat, Open, Put) and ModelLoader (Inspect,
//     Convert), package kilnplugin.v1.
//   - 1 (unchanged): StorageBackend gained the optional FetchTo. The change
//     is additive: an older plugin answers UNIMPLEMENTED and kiln falls back
//     to Open, and an older kiln never calls it, so the version stays 1.
//   - 1 (unchanged): ConvertRequest gained dtype, ConvertResponse
//     converted_tensors; the first loaders implement Convert. An older
//     plugin never implemented Convert (UNIMPLEMENTED), so the version
//     stays 1.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "KILN_PLUGIN",
	MagicCookieValue: "b6f1c2e0-kiln-process-plugin",
}

// Plugin kinds, the keys of PluginMap.
const (
	KindStorage = "storage"
	KindLoader  = "loader"
)

// ErrNotFound is returned (and sent as gRPC NotFound) for a missing key.
var ErrNotFound = errors.New("not found")

// ErrUnsupported is returned (and sent as gRPC Unimplemented) by optional
// calls a plugin does not implement.
var ErrUnsupported = errors.New("unsupported")

// Object describes one stored artifact.
type Object struct {
	// Key is the artifact's slash-separated path inside the backend.
	Key  string `json:"key"`
	Size int64  `json:"size"`
	// SHA256 is the lower-case hex digest, or "" when the backend does not know it.
	SHA256  string    `json:"sha256,omitempty"`
	ModTime time.Time `json:"mod_time"`
	// URI names the artifact for humans and logs.
	URI string `json:"uri"`
	// LocalPath is set by backends whose bytes sit on a local file system.
	LocalPath string `json:"local_path,omitempty"`
}

// Storage is a source of model bytes. Every method must be safe for
// concurrent use and idempotent.
type Storage interface {
	// List returns the objects whose keys start with prefix ("" for all).
	List(ctx context.Context, prefix string) ([]Object, error)
	// Stat returns one object or an error wrapping ErrNotFound.
	Stat(ctx context.Context, key string) (Object, error)
	// Open streams length bytes of key from offset (length <= 0: to the end).
	Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// Putter is implemented by storage backends that accept writes.
type Putter interface {
	Put(ctx context.Context, key string, size int64, r io.Reader) (Object, error)
}

// Fetcher is implemented by storage backends that can write an object's
// bytes straight into a local file, so that bulk bytes do not cross the
// plugin connection. kiln calls FetchTo when the plugin has it and falls back
// to Open when it answers ErrUnsupported.
//
// FetchTo writes length bytes of key from offset (length <= 0: to the end)
// into the file at path, from the file's start, and returns how many bytes
// it wrote. path is an absolute path to a file that kiln created in its own
// cache directory; open it with CreateFetchFile, which truncates it and
// refuses anything but a regular file. FetchTo must be idempotent: kiln
// calls it again, on a restarted plugin, when the plugin died during a call.
//
// # Notes
//
// The plugin and kiln must share a file system and run as the same user: a
// backend meant to run elsewhere simply does not implement Fetcher. kiln
// checks the size and sha256 of what was written before using it.
type Fetcher interface {
	FetchTo(ctx context.Context, key string, offset, length int64, path string) (int64, error)
}

// CreateFetchFile opens path for a FetchTo: it must be absolute and, if it
// exists, a regular file (a symlink is refused, not followed). The file is
// truncated and opened write-only.
func CreateFetchFile(path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("fetch target %q: not an absolute path", path)
	}
	if st, err := os.Lstat(path); err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("fetch target %s: not a regular file (%s)", path, st.Mode().Type())
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|fetchOpenFlags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fetch target: %w", err)
	}
	// O_NOFOLLOW covers a symlink swapped in after the Lstat; a FIFO or a
	// device swapped in would have opened, so look again at what we got.
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("fetch target %s: not a regular file", path)
	}
	return f, nil
}

// Tensor is one tensor of a model file.
type Tensor struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	// Begin and End are byte offsets from the start of the file.
	Begin int64 `json:"begin"`
	End   int64 `json:"end"`
}

// InspectRequest names the artifact a loader should read.
type InspectRequest struct {
	Key  string
	Size int64
	// Head is the artifact's first bytes.
	Head []byte
	// Path, when set, is a local file with the whole artifact.
	Path string
}

// ModelInfo is what a loader found in an artifact.
type ModelInfo struct {
	// NeedBytes > 0 means Head was too short: ask again with that many bytes.
	NeedBytes  int64    `json:"need_bytes,omitempty"`
	Format     string   `json:"format"`
	TotalBytes int64    `json:"total_bytes"`
	Tensors    []Tensor `json:"tensors,omitempty"`
	// VRAMBytes is the estimated device memory of the loaded model.
	VRAMBytes int64  `json:"vram_bytes"`
	Component string `json:"component"`
	Family    string `json:"family,omitempty"`
	// DependsOn lists what must be loaded before this artifact.
	DependsOn []string          `json:"depends_on,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	// NominalBytes is the size of the real model a synthetic file stands for.
	NominalBytes int64 `json:"nominal_bytes"`
}

// Loader reads model metadata. Inspect must be idempotent.
type Loader interface {
	Inspect(ctx context.Context, req InspectRequest) (ModelInfo, error)
}

// Weight dtypes a Converter is asked for, in ComfyUI's weight_dtype names
// (UNETLoader's choices), so that a graph's cast and kiln's conversion
// speak of the same thing.
const (
	DTypeFP16    = "fp16"
	DTypeBF16    = "bf16"
	DTypeFP8E4M3 = "fp8_e4m3fn"
)

// ConvertRequest names an artifact to rewrite and the dtype to rewrite its
// weights in.
type ConvertRequest struct {
	// SrcPath is a local file with the whole artifact; it is only read.
	SrcPath string
	// DstPath is an absolute path to a file kiln created in its own cache
	// directory: open it with CreateFetchFile.
	DstPath string
	// DType is DTypeFP16, DTypeBF16 or DTypeFP8E4M3.
	DType string
}

// ConvertResult says what a Convert wrote.
type ConvertResult struct {
	// Bytes is the size of the file written.
	Bytes  int64
	Format string
	// ConvertedTensors counts the tensors whose dtype changed; 0 means the
	// artifact already was in the dtype asked for (the file is then a copy).
	ConvertedTensors int64
}

// Converter is implemented by loaders that can rewrite an artifact with its
// weights in another dtype, so that a model fits a device it would not fit
// as shipped (issue 16: fp32 → fp16/bf16, fp16/bf16 → fp8). A conversion
// it does not make answers an error wrapping ErrUnsupported. Convert must
// be idempotent: kiln calls it again, on a restarted plugin, when the
// plugin died during a call. kiln hashes what was written and keeps it in
// its disk tier as an artifact of its own.
type Converter interface {
	Convert(ctx context.Context, req ConvertRequest) (ConvertResult, error)
}

// PluginMap is the go-plugin plugin set for both kinds; a host dispenses
// KindStorage or KindLoader from it.
func PluginMap() map[string]goplugin.Plugin {
	return map[string]goplugin.Plugin{
		KindStorage: &StoragePlugin{},
		KindLoader:  &LoaderPlugin{},
	}
}

// Logger returns the JSON stderr logger plugins should use; go-plugin relays
// its lines into kiln's log.
func Logger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: os.Stderr, JSONFormat: true, Level: hclog.Info})
}

// Serve runs impl as a plugin until kiln closes it. impl must be a Storage or
// a Loader. Serve never returns to a process that was not started by kiln:
// go-plugin prints a message and exits.
func Serve(impl any) {
	plugins := map[string]goplugin.Plugin{}
	name := "kiln-plugin"
	switch v := impl.(type) {
	case Storage:
		plugins[KindStorage] = &StoragePlugin{Impl: v}
		name = "storage"
	case Loader:
		plugins[KindLoader] = &LoaderPlugin{Impl: v}
		name = "loader"
	default:
		panic("plugin.Serve: impl is neither a plugin.Storage nor a plugin.Loader")
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugins,
		GRPCServer:      grpcServer,
		Logger:          Logger(name),
	})
}

// grpcServer is go-plugin's default server with larger HTTP/2 flow-control
// windows: model bytes stream through Open in 1 MiB chunks, and gRPC's
// 64 KiB default window stalls the stream on every few frames.
func grpcServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.InitialWindowSize(StreamWindow), grpc.InitialConnWindowSize(StreamWindow),
		grpc.ReadBufferSize(256<<10), grpc.WriteBufferSize(256<<10))
	return goplugin.DefaultGRPCServer(opts)
}

// StreamWindow is the HTTP/2 flow-control window both ends of a plugin
// connection use.
const StreamWindow = 16 << 20
