// Package job keeps kiln's durable job queue.
//
// A Job is a ComfyUI workflow plus its metadata (priority class, deadline,
// tenant). The Store answers Submit only once the job is on disk: appended
// to a write-ahead log and fdatasync'd, so an accepted job survives a crash.
// Submissions that arrive together share one append and one fdatasync
// (group commit): a single committer goroutine takes everything that is
// waiting, logs it, and wakes all the callers. An embedded bbolt database,
// the index that listing and recovery read, is brought up to date from the
// log off that path, and the log is replayed into it when the store opens.
//
// Jobs move through a small state machine, and every move is durable before
// the call returns:
//
//	queued → running → done | failed | cancelled
//	running → queued   (Requeue: the worker died; after MaxAttempts → failed)
//	running → queued   (Preempt: a job of a higher class took the worker;
//	                    the attempt does not count toward MaxAttempts)
//	queued → failed | cancelled
//
// When the store is opened again, every job that was queued or running is
// queued again (a running job keeps its attempt count).
//
// The store keeps an in-memory index of queued jobs per class, in queue
// order, so that the dispatcher never scans the database. Queue order is
// submission (Seq) order unless a job carries an explicit Order (or Front):
// see Job.Rank.
//
// A job's graph is parsed once, when it is submitted: its Facts (what the
// dispatcher, the estimates and the ComfyUI hub need of it) stay in memory
// with every queued or running job and come back with every copy the store
// hands out, and each method that changes a job returns the job as it
// committed it, so that callers never read back what they were just given.
// Facts are never written; Open derives them once per job it recovers.
//
//	s, err := job.Open(path, cfg.Queue, clock.Real())
//	if err != nil { ... }
//	defer s.Close()
//	err = s.Submit(ctx, &job.Job{Class: job.Interactive, Workflow: wf}) // durable on return
//	for range s.Notify() {                 // a job became queued
//		for _, q := range s.Window(64) { // each class's first 64, merged in queue order
//			j, err := s.Start(q.ID, workerID) // ErrBadTransition: someone else took it
//			...
//		}
//	}
//
// See RATIONALE.md for the design decisions.
package job
