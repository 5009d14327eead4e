// Package conformance is the worker protocol conformance suite: one set of
// tests that every kiln worker implementation must pass, parameterised by the
// command that starts the worker.
//
// The suite plays the kernel's side of sdk/worker/PROTOCOL.md over a real
// socketpair passed as fd 3, as internal/worker's pool does, and checks
// framing, hello, ordering, pipelining, cancel, error codes, outputs, and
// what happens when either side goes away. It runs against:
//
//   - kiln-worker-sim (Go), built in TestMain from ../../cmd/kiln-worker-sim;
//   - kiln-worker-echo, the Python SDK's reference worker
//     (sdk/python/kiln-worker-echo), which needs /usr/bin/python3 with
//     msgpack (Debian: apt-get install python3-msgpack); without them its
//     runs are skipped with a message saying so.
//
// Add a worker with KILN_CONFORMANCE_WORKER="name=/path/to/worker arg…".
//
//	go test ./tests/conformance/ -run 'Test.*/python' -v
//
// One convention beyond the protocol lets the suite test crash handling:
// KILN_SIM_CRASH_AFTER_JOBS=N makes a worker exit with status 3 in the
// middle of its N-th run, after its first sampler step.
package conformance
