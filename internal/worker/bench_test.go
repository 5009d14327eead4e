package worker

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// latencies records per-operation durations and reports p50 and p99. The
// benchmarks measure wall time, so they read the real clock; the kernel code
// under test does not.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l[len(l)*50/100]), "p50-ns")
	b.ReportMetric(float64(l[len(l)*99/100]), "p99-ns")
}

// BenchmarkRawSocketpairEcho is the baseline: a 4-byte-length-prefixed
// message of the size of a ping frame, echoed by a goroutine on the other end
// of a Unix socketpair, with the same buffered reads as Conn.
func BenchmarkRawSocketpairEcho(b *testing.B) {
	k, w := connPair(b)
	go func() {
		r := bufio.NewReaderSize(w, 64<<10)
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(r, buf[:4]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(buf)
			if _, err := io.ReadFull(r, buf[4:4+n]); err != nil {
				return
			}
			if _, err := w.Write(buf[:4+n]); err != nil {
				return
			}
		}
	}()
	msg := make([]byte, 4+23) // a ping frame is 27 bytes
	binary.BigEndian.PutUint32(msg, 23)
	in := make([]byte, len(msg))
	r := bufio.NewReaderSize(k, 64<<10)
	lat := make(latencies, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := k.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, in); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	lat.report(b)
}

// BenchmarkConnPing measures one ping round trip through Conn.Call and
// wire.Serve over a Unix socketpair.
func BenchmarkConnPing(b *testing.B) {
	c, _, _ := startWorker(b, &connHandler{})
	ctx := context.Background()
	lat := make(latencies, 0, b.N)
	var rep wire.PingReply
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := c.Call(ctx, wire.TypePing, wire.PingRequest{Nonce: uint64(i)}, &rep); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	lat.report(b)
}

// BenchmarkConnPipelined measures throughput with 64 concurrent callers
// sharing one Conn, and their per-call latency.
func BenchmarkConnPipelined(b *testing.B) {
	c, _, _ := startWorker(b, &connHandler{})
	ctx := context.Background()
	const callers = 64
	var next atomic.Int64
	var mu sync.Mutex
	all := make(latencies, 0, b.N)
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	begin := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine latencies
			var rep wire.PingReply
			for next.Add(1) <= int64(b.N) {
				start := time.Now()
				if err := c.Call(ctx, wire.TypePing, wire.PingRequest{Nonce: 1}, &rep); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	all.report(b)
}
