// Package worker supervises kiln's persistent worker processes and speaks the
// worker protocol to them (sdk/worker/PROTOCOL.md).
//
// A Pool keeps PerDevice processes per device alive: each is started with one
// end of a Unix socketpair as fd 3 and CUDA_VISIBLE_DEVICES naming its
// device, says hello, is pinged every PingInterval, is restarted with
// exponential backoff when it dies, and is recycled (restarted gracefully)
// after RecycleAfterJobs jobs or when its memory passes MaxRSSBytes. Worker
// processes die with kiln: they are forked from one locked OS thread with a
// parent-death signal.
//
// A Conn is the kernel's end of one connection: requests are pipelined and
// replies matched by id; when the process dies every pending call fails with
// an error wrapping ErrConnClosed, which is how the dispatcher learns that a
// job's attempt was lost. Call and Run are safe for concurrent use; a
// cancelled Run sends the worker a cancel and waits (bounded by a short
// grace period) for the run's terminal frame; a worker's error frame comes
// back as *wire.Error (errors.As).
//
//	c := worker.NewConn(netConn, log) // a waiting caller reads its own replies
//	err := c.Call(ctx, wire.TypeHello, wire.HelloRequest{...}, &hello)
//	res, err := c.Run(ctx, wire.RunRequest{...}, onProgress)
//	<-c.Done()                        // closed when the peer is gone
//
//	p, _ := worker.NewPool(cfg, worker.PoolOptions{Devices: devs, OnReady: ..., OnExit: ...})
//	p.Start(ctx)
//	l, ok := p.Acquire("w0.0")
//	res, err := l.Worker.Run(ctx, req, onProgress)
//	p.Release(l, err == nil)
package worker
