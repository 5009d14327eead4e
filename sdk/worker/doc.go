// Package worker is the contract between the kiln kernel and its worker
// processes: the message types, the frame codec, and Serve, which runs the
// worker side of the protocol around a Handler.
//
// A worker is a long-lived process pinned to one GPU. The kernel starts it
// with one end of a Unix socketpair as file descriptor 3 and speaks
// length-prefixed msgpack frames over it; stdout and stderr stay free for the
// worker's logs. PROTOCOL.md in this directory describes the wire format
// precisely enough to write a worker in another language.
//
// A Go worker implements Handler and hands it to ServeFD3:
//
//	type sim struct{ /* ... */ }
//
//	func (s *sim) Run(ctx context.Context, req worker.RunRequest, progress func(worker.Progress)) (worker.RunResult, error) {
//		for step := 1; step <= 20; step++ {
//			if err := ctx.Err(); err != nil {
//				return worker.RunResult{}, err // sent as ErrCodeCancelled
//			}
//			progress(worker.Progress{JobID: req.JobID, Node: "3", Value: step, Max: 20})
//		}
//		return worker.RunResult{JobID: req.JobID}, nil
//	}
//
//	// ... Hello, Load, Unload, Stats ...
//
//	func main() {
//		if err := worker.ServeFD3(&sim{}); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// The kernel side (internal/worker) uses WriteFrame, ReadFrame and DecodeBody
// from this package, so both ends share one codec.
package worker
