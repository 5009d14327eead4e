package worker

import (
	"context"
	"fmt"
)

// Error is a worker-side failure carried in an error frame. Handlers return it
// to choose the code; any other error is sent with ErrCodeInternal (or
// ErrCodeCancelled when the run's context was cancelled).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("worker error %s: %s", e.Code, e.Message) }

// Errorf builds an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Handler is implemented by a worker. Serve decodes frames, calls the matching
// method, and writes the reply. Methods may be called concurrently (requests
// are pipelined): Run in particular runs on its own goroutine so that ping,
// stats and cancel are answered while a job executes.
//
// Call order: Hello first (exactly once), then any mix of the others.
type Handler interface {
	Hello(ctx context.Context, req HelloRequest) (HelloReply, error)
	Load(ctx context.Context, req LoadRequest) (LoadReply, error)
	Unload(ctx context.Context, req UnloadRequest) (UnloadReply, error)
	// Run executes one job. ctx is cancelled when the kernel sends cancel for
	// this run. progress may be called any number of times before Run returns.
	Run(ctx context.Context, req RunRequest, progress func(Progress)) (RunResult, error)
	Stats(ctx context.Context) (StatsReply, error)
}
