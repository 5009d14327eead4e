package plugin

import (
	"context"
	"errors"
	"io"

	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// Storage is a supervised storage plugin; every method is retried on a
// restarted plugin when the process dies.
type Storage struct{ p *Process }

var (
	_ sdk.Storage = (*Storage)(nil)
	_ sdk.Fetcher = (*Storage)(nil)
)

// Process is the plugin process behind s.
func (s *Storage) Process() *Process { return s.p }

// List calls the plugin's List.
func (s *Storage) List(ctx context.Context, prefix string) (out []sdk.Object, err error) {
	err = s.p.call(ctx, func(impl any) error {
		out, err = impl.(sdk.Storage).List(ctx, prefix)
		return err
	})
	return out, err
}

// Stat calls the plugin's Stat.
func (s *Storage) Stat(ctx context.Context, key string) (o sdk.Object, err error) {
	err = s.p.call(ctx, func(impl any) error {
		o, err = impl.(sdk.Storage).Stat(ctx, key)
		return err
	})
	return o, err
}

// Open streams a byte range. When the plugin dies mid-stream, the reader
// restarts it and resumes at the byte it had reached.
func (s *Storage) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	r := &resumingReader{s: s, ctx: ctx, key: key, off: offset, left: length}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

type resumingReader struct {
	s    *Storage
	ctx  context.Context
	key  string
	off  int64
	left int64 // <= 0: to the end
	rc   io.ReadCloser
}

func (r *resumingReader) open() error {
	return r.s.p.call(r.ctx, func(impl any) error {
		rc, err := impl.(sdk.Storage).Open(r.ctx, r.key, r.off, r.left)
		if err != nil {
			return err
		}
		r.rc = rc
		return nil
	})
}

func (r *resumingReader) Read(b []byte) (int, error) {
	for attempt := 0; ; attempt++ {
		n, err := r.rc.Read(b)
		r.off += int64(n)
		if r.left > 0 {
			r.left -= int64(n)
		}
		if err == nil || errors.Is(err, io.EOF) || n > 0 {
			if n > 0 && err != nil && !errors.Is(err, io.EOF) {
				err = nil // report the bytes now, the error on the next read
			}
			return n, err
		}
		if r.ctx.Err() != nil || attempt >= r.s.p.h.cfg.MaxRetries || !r.s.p.dead(err) {
			return 0, err
		}
		r.s.p.log.Warn().Err(err).Int64("offset", r.off).Msg("plugin died mid-stream; resuming after restart")
		r.rc.Close()
		if oerr := r.open(); oerr != nil {
			return 0, oerr
		}
	}
}

func (r *resumingReader) Close() error { return r.rc.Close() }

// FetchTo asks the plugin to write a byte range of key into the local file at
// path (see sdk.Fetcher). Each call rewrites the whole file, so it is retried
// on a restarted plugin like List and Stat. It returns an error wrapping
// sdk.ErrUnsupported when the plugin does not implement FetchTo; callers then
// read through Open.
//
// path must be a file the caller created in a directory it owns: the plugin
// runs as the same user and writes there.
func (s *Storage) FetchTo(ctx context.Context, key string, offset, length int64, path string) (n int64, err error) {
	err = s.p.call(ctx, func(impl any) error {
		f, ok := impl.(sdk.Fetcher)
		if !ok {
			return sdk.ErrUnsupported
		}
		n, err = f.FetchTo(ctx, key, offset, length, path)
		return err
	})
	return n, err
}

// Put calls the plugin's Put once: a stream from a caller's reader cannot be
// replayed, so it is not retried.
func (s *Storage) Put(ctx context.Context, key string, size int64, rd io.Reader) (sdk.Object, error) {
	impl, err := s.p.get(ctx)
	if err != nil {
		return sdk.Object{}, err
	}
	pt, ok := impl.(sdk.Putter)
	if !ok {
		return sdk.Object{}, sdk.ErrUnsupported
	}
	return pt.Put(ctx, key, size, rd)
}

// Loader is a supervised loader plugin.
type Loader struct{ p *Process }

var _ sdk.Loader = (*Loader)(nil)

// Process is the plugin process behind l.
func (l *Loader) Process() *Process { return l.p }

// Inspect calls the plugin's Inspect.
func (l *Loader) Inspect(ctx context.Context, req sdk.InspectRequest) (mi sdk.ModelInfo, err error) {
	err = l.p.call(ctx, func(impl any) error {
		mi, err = impl.(sdk.Loader).Inspect(ctx, req)
		return err
	})
	return mi, err
}

var _ sdk.Converter = (*Loader)(nil)

// Convert calls the plugin's Convert, again on a restarted plugin when the
// process dies (Convert rewrites the whole destination, so a retry is
// safe). It returns an error wrapping sdk.ErrUnsupported when the plugin
// does not convert.
func (l *Loader) Convert(ctx context.Context, req sdk.ConvertRequest) (r sdk.ConvertResult, err error) {
	err = l.p.call(ctx, func(impl any) error {
		c, ok := impl.(sdk.Converter)
		if !ok {
			return sdk.ErrUnsupported
		}
		r, err = c.Convert(ctx, req)
		return err
	})
	return r, err
}
