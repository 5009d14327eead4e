// Package cluster makes many kiln nodes one service on NATS JetStream.
//
// A node that has cluster.nats set joins the cluster through Open; a node
// without it never imports NATS at run time and keeps its bbolt queue as
// the only queue. JetStream holds four things, each replicated
// (cluster.replicas, R3 by default):
//
//   - the job registry, KV bucket KILN_jobs: one record per job (the job
//     as internal/job describes it, plus the node that runs or ran it). A
//     submit creates the record before it answers, so a client's id (a
//     ComfyUI prompt_id, a /v1 Idempotency-Key) is unique cluster-wide;
//   - the work queue, stream KILN_WORK (work-queue retention): one message
//     per job, its id, on kiln.work.<class>.<node> for the node that the
//     routing policy chose (Local.Router, place.go) or kiln.work.<class>
//     when no node could take it, published with the job id as Nats-Msg-Id
//     so that a retried submit is deduplicated;
//   - the nodes, KV bucket KILN_nodes: each node's heartbeat (NodeInfo:
//     health, jobs, workers, VRAM, backlog, load rates, resident models)
//     every second with a TTL, so that a dead node leaves it on its own;
//   - the outputs, object store KILN_outputs: every file a job wrote, so
//     that /view on any node serves it after its node is gone.
//
// Each node pulls from its own durable consumers (the jobs routed to it,
// one per class) and the shared ones, only while it has room (ready
// workers + prefetch), and adopts the consumers of nodes whose heartbeat is
// gone, deleting each once it holds nothing more. A node cut off from NATS
// (found by unanswered pings every AckWait/4) is not ready and pulls
// nothing; after AckWait it stops the jobs it held, which other nodes have
// adopted, and when it is back it creates its consumers again. It claims a job in the registry (a compare-and-set on the record's
// revision, read from the stream's leader: a KV direct get may come from a
// follower that lacks the latest write), runs it through its own kernel
// (the local job.Store is the node's execution queue, the dispatcher and
// workers are unchanged), keeps the message alive with in-progress signals
// every AckWait/3, and acks it only after the result is in the registry. A
// node that dies stops signalling; JetStream redelivers its jobs after
// AckWait to another node, whose claim raises the record's revision so
// that a late result from the dead node (its compare-and-set fails) is
// dropped: no job is listed as done twice. A queued job left with no work
// message (a publish after its record's write failed, or its message was
// dropped before the record was stored) is queued again by the audit of
// the queue (audit.go). See docs/cluster.md.
//
//	c, err := cluster.Open(ctx, cfg.Cluster, cluster.Local{Store: st, ...}, log)
//	go c.Run(ctx)
//	rec, existed, err := c.Submit(ctx, &job.Job{...})
package cluster
