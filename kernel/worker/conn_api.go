package worker

// This file fixes the kernel-side connection API that the pool and the
// dispatcher build on; conn.go implements it.
//
//	c := NewConn(netConn, log)            // starts the read loop
//	var hr wire.HelloReply
//	err := c.Call(ctx, wire.TypeHello, wire.HelloRequest{...}, &hr)
//	res, err := c.Run(ctx, wire.RunRequest{...}, func(p wire.Progress) {...})
//	c.Close()
//	<-c.Done()                            // closed when the peer is gone
//
// Call and Run are safe for concurrent use and pipelined: many requests are in
// flight at once and replies are matched by id. When the connection breaks,
// every pending call returns an error wrapping ErrConnClosed. Cancelling ctx
// in Run sends a cancel request for that run and waits for the run's terminal
// frame (bounded by a short grace period). A worker error frame is returned as
// *wire.Error (errors.As).
