package worker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

func ExampleWriteFrame() {
	var buf bytes.Buffer
	_ = wire.WriteFrame(&buf, wire.Header{ID: 1, Type: wire.TypePing}, wire.PingRequest{Nonce: 42})
	fmt.Print(hex.Dump(buf.Bytes()))

	h, body, _ := wire.ReadFrame(bufio.NewReader(&buf))
	var ping wire.PingRequest
	_ = wire.DecodeBody(body, &ping)
	fmt.Println(h.ID, h.Type, ping.Nonce)
	// Output:
	// 00000000  00 00 00 17 82 a2 69 64  01 a4 74 79 70 65 a4 70  |......id..type.p|
	// 00000010  69 6e 67 81 a5 6e 6f 6e  63 65 2a                 |ing..nonce*|
	// 1 ping 42
}

// echoWorker is the smallest useful Handler.
type echoWorker struct{}

func (echoWorker) Hello(ctx context.Context, req wire.HelloRequest) (wire.HelloReply, error) {
	return wire.HelloReply{Name: "echo", Version: "1"}, nil
}
func (echoWorker) Load(ctx context.Context, req wire.LoadRequest) (wire.LoadReply, error) {
	return wire.LoadReply{Model: req.Model}, nil
}
func (echoWorker) Unload(ctx context.Context, req wire.UnloadRequest) (wire.UnloadReply, error) {
	return wire.UnloadReply{Model: req.Model}, nil
}
func (echoWorker) Run(ctx context.Context, req wire.RunRequest, progress func(wire.Progress)) (wire.RunResult, error) {
	progress(wire.Progress{JobID: req.JobID, Node: "1", Value: 1, Max: 1})
	return wire.RunResult{JobID: req.JobID}, nil
}
func (echoWorker) Stats(ctx context.Context) (wire.StatsReply, error) { return wire.StatsReply{}, nil }

func ExampleServe() {
	kernel, worker := net.Pipe() // a real worker gets a socketpair as fd 3: see ServeFD3
	done := make(chan error)
	go func() { done <- wire.Serve(context.Background(), worker, echoWorker{}) }()

	r := bufio.NewReader(kernel)
	send := func(id uint64, typ string, body any) {
		go func() { _ = wire.WriteFrame(kernel, wire.Header{ID: id, Type: typ}, body) }()
	}
	send(1, wire.TypeHello, wire.HelloRequest{Protocol: wire.ProtocolVersion, WorkerID: "w0"})
	h, _, _ := wire.ReadFrame(r)
	fmt.Println(h.ID, h.Type)

	send(2, wire.TypeRun, wire.RunRequest{JobID: "job-1"})
	for h.Type != wire.TypeResult {
		h, _, _ = wire.ReadFrame(r)
		fmt.Println(h.ID, h.Type)
	}
	kernel.Close()
	fmt.Println("serve:", <-done)
	// Output:
	// 1 ok
	// 2 progress
	// 2 result
	// serve: <nil>
}
