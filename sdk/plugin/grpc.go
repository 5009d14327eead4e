package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/kiln-gpu/kiln/sdk/plugin/kilnpluginv1"
)

// ChunkSize is the size of the pieces an Open stream carries. gRPC's default
// message limit is 4 MiB; 1 MiB chunks keep the pipe full without copies
// that large.
const ChunkSize = 1 << 20

// StoragePlugin is the go-plugin glue for Storage. Impl is set on the plugin
// side only.
type StoragePlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl Storage
}

var _ goplugin.GRPCPlugin = (*StoragePlugin)(nil)

// GRPCServer registers Impl on the plugin's gRPC server.
func (p *StoragePlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterStorageBackendServer(s, &storageServer{impl: p.Impl})
	return nil
}

// GRPCClient returns a Storage (and Putter and Fetcher) that calls the plugin.
func (p *StoragePlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &GRPCStorage{client: pb.NewStorageBackendClient(c)}, nil
}

// LoaderPlugin is the go-plugin glue for Loader. Impl is set on the plugin
// side only.
type LoaderPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl Loader
}

var _ goplugin.GRPCPlugin = (*LoaderPlugin)(nil)

// GRPCServer registers Impl on the plugin's gRPC server.
func (p *LoaderPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterModelLoaderServer(s, &loaderServer{impl: p.Impl})
	return nil
}

// GRPCClient returns a Loader (and Converter) that calls the plugin.
func (p *LoaderPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &GRPCLoader{client: pb.NewModelLoaderClient(c)}, nil
}

// toStatus turns an implementation's error into a gRPC status.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrUnsupported):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// fromStatus turns a gRPC status back into an error that wraps the SDK's
// sentinels, so that callers can use errors.Is.
func fromStatus(op string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%s: %s: %w", op, st.Message(), ErrNotFound)
	case codes.Unimplemented:
		return fmt.Errorf("%s: %s: %w", op, st.Message(), ErrUnsupported)
	case codes.Canceled:
		return fmt.Errorf("%s: %w", op, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", op, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func objToPB(o Object) *pb.Object {
	var mt int64
	if !o.ModTime.IsZero() {
		mt = o.ModTime.UnixNano()
	}
	return &pb.Object{Key: o.Key, Size: o.Size, Sha256: o.SHA256, ModTimeUnixNano: mt, Uri: o.URI, LocalPath: o.LocalPath}
}

func objFromPB(o *pb.Object) Object {
	if o == nil {
		return Object{}
	}
	out := Object{Key: o.Key, Size: o.Size, SHA256: o.Sha256, URI: o.Uri, LocalPath: o.LocalPath}
	if o.ModTimeUnixNano != 0 {
		out.ModTime = time.Unix(0, o.ModTimeUnixNano)
	}
	return out
}

type storageServer struct {
	pb.UnimplementedStorageBackendServer
	impl Storage
}

func (s *storageServer) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	objs, err := s.impl.List(ctx, req.Prefix)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListResponse{Objects: make([]*pb.Object, 0, len(objs))}
	for _, o := range objs {
		out.Objects = append(out.Objects, objToPB(o))
	}
	return out, nil
}

func (s *storageServer) Stat(ctx context.Context, req *pb.StatRequest) (*pb.StatResponse, error) {
	o, err := s.impl.Stat(ctx, req.Key)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StatResponse{Object: objToPB(o)}, nil
}

func (s *storageServer) Open(req *pb.OpenRequest, stream pb.StorageBackend_OpenServer) error {
	rc, err := s.impl.Open(stream.Context(), req.Key, req.Offset, req.Length)
	if err != nil {
		return toStatus(err)
	}
	defer rc.Close()
	buf := make([]byte, ChunkSize)
	for {
		n, rerr := io.ReadFull(rc, buf)
		if n > 0 {
			if err := stream.Send(&pb.Chunk{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return toStatus(rerr)
		}
	}
}

func (s *storageServer) Put(stream pb.StorageBackend_PutServer) error {
	p, ok := s.impl.(Putter)
	if !ok {
		return status.Error(codes.Unimplemented, "put: this backend is read-only")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		if _, err := pw.Write(first.Data); err != nil {
			return
		}
		for {
			c, err := stream.Recv()
			if err == io.EOF {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(c.Data); err != nil {
				return
			}
		}
	}()
	o, err := p.Put(stream.Context(), first.Key, first.Size, pr)
	pr.Close()
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&pb.PutResponse{Object: objToPB(o)})
}

func (s *storageServer) FetchTo(ctx context.Context, req *pb.FetchToRequest) (*pb.FetchToResponse, error) {
	f, ok := s.impl.(Fetcher)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "fetch to: this backend does not write local files")
	}
	n, err := f.FetchTo(ctx, req.Key, req.Offset, req.Length, req.Path)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.FetchToResponse{Bytes: n}, nil
}

// GRPCStorage is the host side of a storage plugin: a Storage, Putter and
// Fetcher whose methods are gRPC calls. Put and FetchTo return errors
// wrapping ErrUnsupported when the plugin lacks them.
type GRPCStorage struct {
	client pb.StorageBackendClient
}

var (
	_ Storage = (*GRPCStorage)(nil)
	_ Putter  = (*GRPCStorage)(nil)
	_ Fetcher = (*GRPCStorage)(nil)
)

// List calls the plugin's List.
func (c *GRPCStorage) List(ctx context.Context, prefix string) ([]Object, error) {
	r, err := c.client.List(ctx, &pb.ListRequest{Prefix: prefix})
	if err != nil {
		return nil, fromStatus("list", err)
	}
	out := make([]Object, 0, len(r.Objects))
	for _, o := range r.Objects {
		out = append(out, objFromPB(o))
	}
	return out, nil
}

// Stat calls the plugin's Stat.
func (c *GRPCStorage) Stat(ctx context.Context, key string) (Object, error) {
	r, err := c.client.Stat(ctx, &pb.StatRequest{Key: key})
	if err != nil {
		return Object{}, fromStatus("stat "+key, err)
	}
	return objFromPB(r.Object), nil
}

// Open starts the plugin's Open stream; Close cancels it.
func (c *GRPCStorage) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := c.client.Open(ctx, &pb.OpenRequest{Key: key, Offset: offset, Length: length})
	if err != nil {
		cancel()
		return nil, fromStatus("open "+key, err)
	}
	return &streamReader{key: key, s: s, cancel: cancel}, nil
}

type streamReader struct {
	key    string
	s      pb.StorageBackend_OpenClient
	cancel context.CancelFunc
	buf    []byte
	err    error
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		c, err := r.s.Recv()
		if err == io.EOF {
			r.err = io.EOF
			continue
		}
		if err != nil {
			r.err = fromStatus("read "+r.key, err)
			continue
		}
		r.buf = c.Data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *streamReader) Close() error {
	r.cancel()
	return nil
}

// Put streams r to the plugin's Put.
func (c *GRPCStorage) Put(ctx context.Context, key string, size int64, r io.Reader) (Object, error) {
	s, err := c.client.Put(ctx)
	if err != nil {
		return Object{}, fromStatus("put "+key, err)
	}
	buf := make([]byte, ChunkSize)
	first := true
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 || first {
			msg := &pb.PutChunk{Data: buf[:n]}
			if first {
				msg.Key, msg.Size = key, size
				first = false
			}
			if err := s.Send(msg); err != nil {
				_, rerr2 := s.CloseAndRecv()
				return Object{}, fromStatus("put "+key, errors.Join(err, rerr2))
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return Object{}, fmt.Errorf("put %s: read: %w", key, rerr)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		return Object{}, fromStatus("put "+key, err)
	}
	return objFromPB(resp.Object), nil
}

// FetchTo asks the plugin to write a byte range of key into the local file
// at path.
func (c *GRPCStorage) FetchTo(ctx context.Context, key string, offset, length int64, path string) (int64, error) {
	r, err := c.client.FetchTo(ctx, &pb.FetchToRequest{Key: key, Offset: offset, Length: length, Path: path})
	if err != nil {
		return 0, fromStatus("fetch "+key, err)
	}
	return r.Bytes, nil
}

type loaderServer struct {
	pb.UnimplementedModelLoaderServer
	impl Loader
}

func (s *loaderServer) Inspect(ctx context.Context, req *pb.InspectRequest) (*pb.InspectResponse, error) {
	mi, err := s.impl.Inspect(ctx, InspectRequest{Key: req.Key, Size: req.Size, Head: req.Head, Path: req.Path})
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.InspectResponse{
		NeedBytes: mi.NeedBytes, Format: mi.Format, TotalBytes: mi.TotalBytes, VramBytes: mi.VRAMBytes,
		Component: mi.Component, Family: mi.Family, DependsOn: mi.DependsOn, Metadata: mi.Metadata,
		NominalBytes: mi.NominalBytes,
	}
	for _, t := range mi.Tensors {
		out.Tensors = append(out.Tensors, &pb.Tensor{Name: t.Name, Dtype: t.DType, Shape: t.Shape, Begin: t.Begin, End: t.End})
	}
	return out, nil
}

func (s *loaderServer) Convert(ctx context.Context, req *pb.ConvertRequest) (*pb.ConvertResponse, error) {
	cv, ok := s.impl.(Converter)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "convert: this loader does not convert")
	}
	r, err := cv.Convert(ctx, ConvertRequest{SrcPath: req.SrcPath, DstPath: req.DstPath, DType: req.Dtype})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ConvertResponse{Bytes: r.Bytes, Format: r.Format, ConvertedTensors: r.ConvertedTensors}, nil
}

// GRPCLoader is the host side of a loader plugin.
type GRPCLoader struct {
	client pb.ModelLoaderClient
}

var (
	_ Loader    = (*GRPCLoader)(nil)
	_ Converter = (*GRPCLoader)(nil)
)

// Inspect calls the plugin's Inspect.
func (c *GRPCLoader) Inspect(ctx context.Context, req InspectRequest) (ModelInfo, error) {
	r, err := c.client.Inspect(ctx, &pb.InspectRequest{Key: req.Key, Size: req.Size, Head: req.Head, Path: req.Path})
	if err != nil {
		return ModelInfo{}, fromStatus("inspect "+req.Key, err)
	}
	mi := ModelInfo{
		NeedBytes: r.NeedBytes, Format: r.Format, TotalBytes: r.TotalBytes, VRAMBytes: r.VramBytes,
		Component: r.Component, Family: r.Family, DependsOn: r.DependsOn, Metadata: r.Metadata,
		NominalBytes: r.NominalBytes,
	}
	for _, t := range r.Tensors {
		mi.Tensors = append(mi.Tensors, Tensor{Name: t.Name, DType: t.Dtype, Shape: t.Shape, Begin: t.Begin, End: t.End})
	}
	return mi, nil
}

// Convert calls the plugin's Convert.
func (c *GRPCLoader) Convert(ctx context.Context, req ConvertRequest) (ConvertResult, error) {
	r, err := c.client.Convert(ctx, &pb.ConvertRequest{SrcPath: req.SrcPath, DstPath: req.DstPath, Dtype: req.DType})
	if err != nil {
		return ConvertResult{}, fromStatus("convert "+req.SrcPath, err)
	}
	return ConvertResult{Bytes: r.Bytes, Format: r.Format, ConvertedTensors: r.ConvertedTensors}, nil
}
