// Package clock is the kernel's only source of time.
//
// No kernel package reads time.Now directly: each takes a Clock, so that the
// simulator can drive the real kernel code with virtual time and tests can
// step time by hand.
//
//	c := clock.Real()
//	start := c.Now()
//	if err := c.Sleep(ctx, time.Second); err != nil { ... } // ctx cancelled
package clock

import (
	"context"
	"time"
)

// Clock tells time and waits.
type Clock interface {
	Now() time.Time
	// Since is Now().Sub(t).
	Since(t time.Time) time.Duration
	// After is like time.After.
	After(d time.Duration) <-chan time.Time
	// Sleep waits for d or until ctx is done, whichever is first, and returns
	// ctx.Err() in the second case.
	Sleep(ctx context.Context, d time.Duration) error
}

// Real returns the wall clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) Since(t time.Time) time.Duration        { return time.Since(t) }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
