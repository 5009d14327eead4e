package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/cluster/clusterconfig"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// Names of the JetStream assets the cluster uses. Every node creates them
// if absent, with the same config, so the first node up sets them up.
const (
	workStream    = "KILN_WORK"
	workSubject   = "kiln.work."
	jobsBucket    = "KILN_jobs"
	nodesBucket   = "KILN_nodes"
	outputsBucket = "KILN_outputs"
	cancelSubject = "kiln.cancel."
	// dedupWindow is how long JetStream remembers a job id it queued: a
	// submit retried within it queues nothing twice (the registry's
	// compare-and-set covers the rest).
	dedupWindow = 2 * time.Minute
	// nodeTTL is how long a node's heartbeat in KILN_nodes lives.
	nodeTTL = 6 * time.Second
	// nodeBeat is how often a node writes its heartbeat.
	nodeBeat = time.Second
	// opTimeout bounds one JetStream call.
	opTimeout = 5 * time.Second
	// maxRecordBytes keeps a record under the server's max payload (kiln
	// nats: 8 MiB; NATS's default is 1 MiB, which a production cluster
	// serving kiln should raise).
	maxRecordBytes = 8<<20 - 4096
)

// Errors the API maps to answers.
var (
	// ErrTooLarge: the job's record is beyond what the cluster stores.
	ErrTooLarge = errors.New("the job is too large for the cluster's job registry")
	// ErrUnavailable: NATS or JetStream did not answer.
	ErrUnavailable = errors.New("the cluster is unavailable")
)

// Record is a job as the cluster's registry keeps it: the job, and the node
// that runs or ran it (empty while it waits in the cluster's queue).
type Record struct {
	job.Job
	Node string `json:"node,omitempty"`
	// Target is the node the routing policy chose when the job was
	// submitted; empty when no node could take it then (any node may).
	Target string `json:"target,omitempty"`
	// Token names the submit that created the record, or the last retry
	// of that submit that queued the job again (requeue); its work
	// message carries the same (workMessage), and a message with another
	// token is dropped. Empty in records of older nodes.
	Token string `json:"token,omitempty"`
	// Direct: the node that accepted the job claimed it then (Submit) and
	// no work message was queued for it. If that node stops answering, the
	// other nodes queue one (rescue); a node that claims it from a message
	// clears it.
	Direct bool `json:"direct,omitempty"`
	// Rescue is the revision that the work message the job was claimed
	// through names when that message is a rescue (workMessage); 0 for
	// any other message. The rescue's message is then the job's only one,
	// and a delivery of it after the claim (the claiming node stopped
	// signalling, or its claim was stored but its answer lost) claims the
	// job again, as for any other message: the record's revision moved
	// on by that claim, not past the rescue.
	Rescue uint64 `json:"rescue,omitempty"`
	// Experiment is the tag of the routing experiment arm that routed the
	// job at its submit (Local.Tag), whichever node that was: the node
	// running the experiment counts the job for that arm when it ends.
	Experiment json.RawMessage `json:"experiment,omitempty"`
}

// Local is the node's own kernel as the cluster drives it: its durable
// queue (the node's execution queue), the dispatcher's cancel, and how many
// workers are ready.
type Local struct {
	Store *job.Store
	// Cancel cancels a local job and stops its worker (the dispatcher's
	// Cancel).
	Cancel func(id string) (*job.Job, error)
	// ReadyWorkers is the number of workers that can take a job now.
	ReadyWorkers func() int
	// OutputDir is where the workers write outputs.
	OutputDir string
	// PendingDir is where the node notes the jobs whose outputs it has
	// still to copy to the object store, so that a node killed before a
	// copy makes it when it starts again (empty: no notes).
	PendingDir string
	// Addr is the node's API address, published in its heartbeat.
	Addr func() string
	// State describes the node for its heartbeat (nil: only what the
	// cluster knows itself). It runs once a second and must not block.
	State func() NodeState
	// Router places a submitted job on a node: the active routing policy
	// (internal/policy's Host.Router, through the experiments' split). Nil
	// sends every job to whichever node pulls it first.
	Router decision.Router
	// ModelBytes are the VRAM footprints of models, for the router.
	ModelBytes func(models []string) []uint64
	// Estimate is a job's run time by the cost model (the dispatcher's
	// Estimate), for the router.
	Estimate func(*job.Job) time.Duration
	// Ended, if set, is told of every job of the cluster that ended (done,
	// failed or cancelled, on any node) as this node learns of it: the
	// registry's record, without its workflow, once per job, and the tag
	// the routing experiment that routed it gave it (Record.Experiment;
	// nil if none). A routing experiment counts the jobs routed by it. It
	// must not block.
	Ended func(j *job.Job, experiment json.RawMessage)
	// Tag, if set, is the routing experiment's tag of a job Router has
	// just routed, for its record (nil: routed by no experiment's arm).
	// It is opaque to the cluster.
	Tag func(id string) json.RawMessage
	// Leading, if set, is the routing experiment this node runs, as the
	// other nodes need it to split the jobs submitted to them (nil: none).
	// Its heartbeat carries it. It runs once a second and must not block.
	Leading func() json.RawMessage
	// Follow, if set, is told of another node's routing experiment that
	// this node should split its own jobs for (the Leading of the live
	// node with the smallest id that has one; nil: none any more) each
	// time that changes. It is opaque to the cluster.
	Follow func(experiment json.RawMessage) error
}

// Cluster is this node's membership of a kiln cluster.
type Cluster struct {
	cfg   clusterconfig.Config
	local Local
	log   zerolog.Logger
	// followed is the other node's routing experiment last handed to
	// Local.Follow (the beat's goroutine only).
	followed json.RawMessage

	nc      *nats.Conn
	js      jetstream.JetStream
	jobs    jetstream.KeyValue
	nodes   jetstream.KeyValue
	outputs jetstream.ObjectStore
	// pullers are this node's work consumers, in the order they are
	// served: for each class (interactive first), the jobs routed to this
	// node, then the shared (unrouted) ones.
	pullers []*puller

	mu       sync.Mutex
	held     map[string]*held // jobs this node claimed and has not finished
	room     chan struct{}    // signalled when a held job ends
	finished []*job.Job       // local jobs that ended, for the recorder
	// written has, for each held job and each job whose outputs are being
	// copied, a channel closed once the API has finished its files
	// (OutputsWritten).
	written map[string]chan struct{}
	// unsure are the claims this node wrote whose answer was lost and
	// whose read-back failed too (NATS away): the StartedAt each wrote.
	// A later delivery that finds the record running here since that
	// instant knows the claim was stored and takes it up without counting
	// another attempt.
	unsure map[string]time.Time
	// copies counts the outputs' copies under way (copyOutputs).
	copies sync.WaitGroup
	// recent are the last jobs this node recorded as ended, whole: a
	// record that ended never changes, so Get answers them without asking
	// JetStream (keepRecent). recentIDs is their order, oldest first.
	recent    map[string]*Record
	recentIDs []string
	wake      chan struct{} // signalled when finished grows
	lastBeat  time.Time     // last heartbeat JetStream took
	meanJob   time.Duration // mean estimate of the jobs this node took (routedBacklog)
	routed    int           // jobs in its own consumers at the last look
	cutSince  time.Time     // when the connection was lost; zero while up
	started   time.Time     // when Open joined the cluster

	// requeued counts the jobs this node queued again, by reason
	// (kiln_cluster_jobs_requeued_total).
	requeued requeueCounts

	viewMu sync.RWMutex
	view   map[string]*Record // the registry, without workflows, kept by a watch
	// directs are the records of the view that are direct (claimed at
	// submit, no work message) and have not ended, for rescue.
	directs  map[string]*Record
	nodeView map[string]seenNode // KILN_nodes, kept by a watch
	// routedSince counts the jobs this node routed to each node since that
	// node's last heartbeat (place).
	routedSince map[string]routed
	// goneSince is when the adopt loop first found each dead-looking
	// node's heartbeat missing from the bucket (retire); only that loop
	// touches it.
	goneSince map[string]time.Time
}

// held is a job this node claimed: the message to keep alive and ack, and
// the registry revision its claim wrote.
type held struct {
	msg       jetstream.Msg
	rev       uint64
	rec       Record
	abandoned bool // the node lost NATS for longer than AckWait: drop its result
	// endedAt is when the local kernel said the job ended (JobFinished).
	endedAt time.Time
}

// Open connects to NATS, creates the cluster's streams, buckets and
// consumers if absent, and cancels the local jobs a previous life of this
// node left unfinished (JetStream redelivers them: the cluster, not the
// local queue, is their source of truth). It fails when NATS cannot be
// reached within ctx.
func Open(ctx context.Context, cfg clusterconfig.Config, local Local, log zerolog.Logger) (*Cluster, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, local: local, log: log, started: time.Now(), held: map[string]*held{}, written: map[string]chan struct{}{}, recent: map[string]*Record{},
		room: make(chan struct{}, 1), wake: make(chan struct{}, 1), view: map[string]*Record{}, directs: map[string]*Record{}, nodeView: map[string]seenNode{}, routedSince: map[string]routed{}}
	opts := []nats.Option{
		nats.Name("kiln " + cfg.NodeID),
		// Close is not a lost connection: no warning at shutdown.
		nats.NoCallbacksAfterClientClose(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A partition that drops packets closes no connection: only
		// unanswered pings show it. nats.go's default (every 2 min, two
		// outstanding) would leave a node cut off believing itself
		// connected for minutes; pinging every ack_wait/4 finds it out
		// well before its jobs go elsewhere, so that it stops them
		// (keepAlive) and stops taking work.
		nats.PingInterval(max(cfg.AckWait/4, time.Second)),
		nats.MaxPingsOutstanding(2),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			c.mu.Lock()
			if c.cutSince.IsZero() {
				c.cutSince = time.Now()
			}
			c.mu.Unlock()
			log.Warn().Err(err).Msg("lost the connection to NATS; not taking work until it is back")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.mu.Lock()
			c.cutSince = time.Time{}
			c.mu.Unlock()
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
	}
	if local.PendingDir != "" {
		if err := os.MkdirAll(local.PendingDir, 0o755); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	auth, err := authOptions(cfg)
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	if cfg.IgnoreDiscoveredServers {
		opts = append(opts, nats.IgnoreDiscoveredServers())
	}
	nc, err := nats.Connect(strings.Join(cfg.Servers(), ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect %v: %w", cfg.Servers(), err)
	}
	c.nc = nc
	if err := c.setup(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.forgetLocal(); err != nil {
		nc.Close()
		return nil, err
	}
	if _, err := nc.Subscribe(cancelSubject+cfg.NodeID, c.onCancel); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: subscribe to cancels: %w", err)
	}
	if _, err := nc.Subscribe(aliveSubject+cfg.NodeID, c.answerAlive); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: subscribe to %s: %w", aliveSubject+cfg.NodeID, err)
	}
	return c, nil
}

// authOptions passes the section's credentials and TLS files to nats.go.
func authOptions(cfg clusterconfig.Config) ([]nats.Option, error) {
	var o []nats.Option
	if cfg.CredsFile != "" {
		o = append(o, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.nkey_file: %w", err)
		}
		o = append(o, opt)
	}
	if cfg.User != "" {
		o = append(o, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		o = append(o, nats.Token(cfg.Token))
	}
	if cfg.TLSCert != "" {
		o = append(o, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	if cfg.TLSCA != "" {
		o = append(o, nats.RootCAs(cfg.TLSCA))
	}
	return o, nil
}

// setup creates or updates the cluster's assets. JetStream may still be
// electing its leaders when a cluster starts, so each step is retried until
// ctx ends.
func (c *Cluster) setup(ctx context.Context) error {
	// The outputs' copies publish asynchronously (putObject); a publish
	// whose acknowledgement never comes fails after opTimeout rather than
	// waiting in the context for ever.
	js, err := jetstream.New(c.nc, jetstream.WithPublishAsyncTimeout(opTimeout))
	if err != nil {
		return fmt.Errorf("cluster: jetstream: %w", err)
	}
	c.js = js
	r := c.cfg.Replicas
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"stream " + workStream, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
				Name: workStream, Subjects: []string{workSubject + ">"}, Retention: jetstream.WorkQueuePolicy,
				Storage: jetstream.FileStorage, Replicas: r, Duplicates: dedupWindow,
			})
			return err
		}},
		{"bucket " + jobsBucket, func(ctx context.Context) error {
			kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket: jobsBucket, Replicas: r, History: 1, TTL: c.cfg.JobTTL, Storage: jetstream.FileStorage,
				MaxValueSize: maxRecordBytes + 4096,
			})
			c.jobs = kv
			return err
		}},
		{"bucket " + nodesBucket, func(ctx context.Context) error {
			kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket: nodesBucket, Replicas: r, History: 1, TTL: nodeTTL, Storage: jetstream.MemoryStorage,
			})
			c.nodes = kv
			return err
		}},
		{"object store " + outputsBucket, func(ctx context.Context) error {
			os, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
				Bucket: outputsBucket, Replicas: r, TTL: c.cfg.JobTTL, Storage: jetstream.FileStorage,
			})
			c.outputs = os
			return err
		}},
	}
	for _, class := range []job.Class{job.Interactive, job.Batch} {
		for _, own := range []bool{true, false} {
			p := &puller{name: "kiln-" + string(class), filter: workSubject + string(class), own: own}
			if own {
				p.name, p.filter = nodeConsumer(c.cfg.NodeID, class), workSubject+string(class)+"."+c.cfg.NodeID
			}
			c.pullers = append(c.pullers, p)
			steps = append(steps, struct {
				what string
				do   func(context.Context) error
			}{"consumer " + p.name, func(ctx context.Context) error {
				cons, err := js.CreateOrUpdateConsumer(ctx, workStream, c.consumerConfig(p.name, p.filter))
				p.cons = cons
				return err
			}})
		}
	}
	for _, s := range steps {
		if err := c.retry(ctx, s.what, s.do); err != nil {
			return fmt.Errorf("cluster: create %s: %w", s.what, err)
		}
	}
	return nil
}

// submitTimeout bounds a submit: long enough to ride out a stream leader's
// election after a NATS server dies (a few seconds), short enough for a
// client waiting on the answer.
const submitTimeout = 10 * time.Second

// retryTransient runs do, each try under attemptTimeout, again after an
// error that a lost server or a leader election explains, until ctx ends.
// Other errors (a key that exists, a revision that moved on) return at once.
func retryTransient(ctx context.Context, do func(context.Context) error) error {
	const attemptTimeout = 2 * time.Second
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := do(actx)
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// transient reports whether err means "JetStream did not answer in time or
// has no leader yet", which a retry may get past.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 503: JetStream unavailable, no quorum or leader for the stream.
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected)
}

// puller is one work consumer this node pulls from.
type puller struct {
	name, filter string
	own          bool // the jobs routed to this node (else the shared ones)
	cons         jetstream.Consumer
}

// consumerConfig is a work consumer's config: explicit acks within
// AckWait (held jobs are signalled in progress), no bound on deliveries.
func (c *Cluster) consumerConfig(name, filter string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: name, FilterSubject: filter,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: c.cfg.AckWait,
		// Unlimited: the registry's attempt count bounds a job's starts
		// (cluster.max_attempts), and a redelivery that finds the job
		// finished acks it without running it.
		MaxDeliver: -1, MaxAckPending: -1,
	}
}

// nodeConsumer names the durable consumer of the jobs routed to a node.
func nodeConsumer(node string, class job.Class) string {
	return "kiln-node-" + node + "-" + string(class)
}

// consumerNode undoes nodeConsumer: the node and class, or ok false for
// another consumer.
func consumerNode(name string) (node string, class job.Class, ok bool) {
	rest, ok := strings.CutPrefix(name, "kiln-node-")
	if !ok {
		return "", "", false
	}
	for _, cl := range []job.Class{job.Interactive, job.Batch} {
		if n, found := strings.CutSuffix(rest, "-"+string(cl)); found && n != "" {
			return n, cl, true
		}
	}
	return "", "", false
}

// retry runs do until it succeeds or ctx ends, each try under opTimeout,
// saying every few seconds what it waits for: a node started before its
// NATS servers waits for them (up to the join timeout), and should not be
// silent about it.
func (c *Cluster) retry(ctx context.Context, what string, do func(context.Context) error) error {
	const sayEvery = 5 * time.Second
	said := time.Now()
	for {
		tctx, cancel := context.WithTimeout(ctx, opTimeout)
		err := do(tctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Since(said) >= sayEvery {
			if !c.nc.IsConnected() {
				err = errors.New("no NATS server of cluster.nats answers")
			}
			c.log.Warn().Err(err).Str("step", what).Strs("nats", c.cfg.Servers()).Msg("waiting for NATS JetStream")
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// forgetLocal cancels the local jobs a previous life of this node left
// queued or running: their messages were never acked, so JetStream gives
// them out again, to this node or another, and running them from the local
// queue too would run them twice.
func (c *Cluster) forgetLocal() error {
	n := 0
	for _, st := range []job.State{job.Queued, job.Running} {
		jobs, err := c.local.Store.List(st, 1<<30)
		if err != nil {
			return fmt.Errorf("cluster: list local %s jobs: %w", st, err)
		}
		for _, j := range jobs {
			if _, err := c.local.Store.Cancel(j.ID); err == nil {
				n++
			}
		}
	}
	if n > 0 {
		c.log.Info().Int("jobs", n).Msg("dropped this node's unfinished jobs from its last run; the cluster redelivers them")
	}
	return nil
}

// NodeID is this node's name in the cluster.
func (c *Cluster) NodeID() string { return c.cfg.NodeID }

// Close disconnects from NATS. Jobs still held are not acked: JetStream
// gives them to another node after AckWait.
func (c *Cluster) Close() {
	if c.nc != nil {
		c.nc.Close()
	}
}

// Ready says why the node cannot take work, or nil: it must be connected
// to NATS and a heartbeat that says it is healthy (a worker up) must have
// reached JetStream within the last few seconds.
func (c *Cluster) Ready() error {
	if !c.nc.IsConnected() {
		return fmt.Errorf("not connected to NATS: %w", ErrUnavailable)
	}
	c.mu.Lock()
	last := c.lastBeat
	c.mu.Unlock()
	if time.Since(last) > 3*nodeBeat {
		if last.IsZero() {
			return fmt.Errorf("no healthy heartbeat has reached JetStream yet: %w", ErrUnavailable)
		}
		return fmt.Errorf("no healthy heartbeat reached JetStream for %s: %w", time.Since(last).Round(time.Millisecond), ErrUnavailable)
	}
	return nil
}

// key is a job id as a KV key: ids of letters, digits, '-' and '_' as they
// are, others (with '.' or ':', which KV keys cannot hold as they are) in
// hex behind "x=", which no job id can start with.
func key(id string) string {
	if plainID.MatchString(id) {
		return id
	}
	return "x=" + hex.EncodeToString([]byte(id))
}

// idFromKey undoes key.
func idFromKey(k string) string {
	if h, ok := strings.CutPrefix(k, "x="); ok {
		if b, err := hex.DecodeString(h); err == nil {
			return string(b)
		}
	}
	return k
}

var (
	plainID = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	validID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// newID is a job id as job.Store makes them: 6 bytes of Unix milliseconds,
// 10 random bytes, in hex.
func newID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	_, _ = rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}

// Submit makes j durable in the cluster: its record in the registry and its
// id in the work queue, both replicated, before it returns. A job whose id
// exists already is not submitted again: Submit returns the stored record
// and existed=true (an idempotent retry), and queues the job again under a
// new token if it still waits (requeue: its first message may be gone, and
// the new token keeps the two from running it twice). Errors wrap
// job.ErrBadID, job.ErrBadClass, ErrTooLarge or ErrUnavailable.
//
// A job that the routing policy places on this node while it has room is
// claimed here, in the record that Submit creates (running on this node,
// attempt 1), and queued in the local kernel at once: the round trips of a
// claim (the work message's delivery, a read of the record, its
// compare-and-set) would otherwise come before every job that stays where
// it was submitted. No work message is queued for it (Record.Direct): the
// replicated record is the job's only copy, and if this node dies or is cut
// off the others find the job there and queue it (rescue). Any other job
// gets a work message, written concurrently with its record; the message
// names the submit that wrote it (Record.Token), and a node that pulls a
// message whose record is not there yet waits for it (take).
func (c *Cluster) Submit(ctx context.Context, j *job.Job) (*Record, bool, error) {
	if j.Class != job.Interactive && j.Class != job.Batch {
		return nil, false, fmt.Errorf("cluster: submit: class %q: %w", j.Class, job.ErrBadClass)
	}
	start := time.Now()
	now := start.UTC()
	rec := Record{Job: *j}
	if rec.ID == "" {
		rec.ID = newID(now)
	} else if !validID.MatchString(rec.ID) {
		return nil, false, fmt.Errorf("cluster: submit: id %q: %w", rec.ID, job.ErrBadID)
	}
	rec.State, rec.CreatedAt, rec.Attempts = job.Queued, now, 0
	rec.StartedAt, rec.FinishedAt, rec.Worker, rec.Outputs, rec.Error, rec.Seq = time.Time{}, time.Time{}, "", nil, "", 0
	var work time.Duration
	rec.Target, work = c.place(&rec.Job)
	if c.local.Tag != nil {
		rec.Experiment = c.local.Tag(rec.ID)
	}
	rec.Token = newToken()
	claimed := rec.Target == c.cfg.NodeID && c.claimAtSubmit(&rec, now)
	if claimed {
		c.unroute(work)
	}
	placed := time.Now()
	data, err := json.Marshal(&rec)
	if err == nil && len(data) > maxRecordBytes {
		err = fmt.Errorf("cluster: submit: record of %d bytes (at most %d): %w", len(data), maxRecordBytes, ErrTooLarge)
	} else if err != nil {
		err = fmt.Errorf("cluster: submit: encode: %w", err)
	}
	if err != nil {
		c.unclaim(rec.ID, claimed)
		return nil, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, submitTimeout)
	defer cancel()
	// The message, concurrently with the record: a node that pulls it
	// first waits for the record (take), and a message whose record is
	// never written (the create failed, or found an older job of this
	// id) names a token no record has, and is dropped.
	published := make(chan error, 1)
	if claimed {
		published <- nil
	} else {
		go func() { published <- c.publish(ctx, rec.ID, rec.Class, rec.Target, rec.Token, 0) }()
	}
	var rev uint64
	err = retryTransient(ctx, func(ctx context.Context) (err error) {
		rev, err = c.jobs.Create(ctx, key(rec.ID), data)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyExists) {
		old, oldRev, gerr := c.get(ctx, rec.ID)
		if gerr == nil && old.Token == rec.Token {
			// This submit's own write: an earlier try was stored but its
			// acknowledgement was lost (a server died), and the retry
			// found it. The job is new.
			rev, err = oldRev, nil
		}
	}
	created := time.Now()
	pubErr := <-published
	if errors.Is(err, jetstream.ErrKeyExists) {
		c.unclaim(rec.ID, claimed)
		old, oldRev, gerr := c.get(ctx, rec.ID)
		if gerr != nil {
			return nil, false, gerr
		}
		if old.State == job.Queued {
			token := old.Token
			if err := c.requeue(ctx, old, oldRev); err != nil {
				return nil, false, err
			}
			if old.Token != token || token == "" {
				c.requeued.resubmit.Add(1)
			}
		}
		return old, true, nil
	}
	if err != nil {
		c.unclaim(rec.ID, claimed)
		return nil, false, fmt.Errorf("cluster: submit %s: %v: %w", rec.ID, err, ErrUnavailable)
	}
	rec.Seq = rev
	if pubErr != nil {
		// Best effort: without its message the record would wait forever
		// (a retry of the same id queues it again in any case).
		c.unclaim(rec.ID, claimed)
		dctx, dcancel := context.WithTimeout(context.Background(), opTimeout)
		_ = c.jobs.Delete(dctx, key(rec.ID), jetstream.LastRevision(rev))
		dcancel()
		return nil, false, pubErr
	}
	c.remember(&rec)
	out := rec
	if claimed {
		c.runClaimed(ctx, &rec, rev)
		// The client hears what it would from a single node: accepted,
		// waiting for a worker (of this node, as the record says).
		out.State, out.StartedAt = job.Queued, time.Time{}
	}
	c.log.Debug().Str("job", rec.ID).Bool("claimed", claimed).Str("target", rec.Target).
		Float64("place_ms", ms(placed.Sub(start))).Float64("write_ms", ms(created.Sub(placed))).
		// Then: the local queue's submit of a claimed job, or the rest of
		// the work message's publish of another.
		Float64(map[bool]string{true: "local_submit_ms", false: "publish_wait_ms"}[claimed], ms(time.Since(created))).
		Float64("submit_ms", ms(time.Since(start))).
		Msg("submitted")
	return &out, false, nil
}

// ms is a duration in milliseconds, for the timing fields of debug lines.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// newToken names one submit of a job: its record and its work message
// carry it, so that a message another submit of the same id wrote (one
// that lost the race for the record) is recognised and dropped.
func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// workMessage is a work message's body: the job's id, the token of the
// submit that queued it, and for a rescued job the record's revision that
// it was queued for ("id token rev"; ids have no spaces). A rescue queued
// for a revision that has moved on (the job was claimed, or ended,
// meanwhile) is dropped.
func workMessage(id, token string, rev uint64) []byte {
	switch {
	case token == "" && rev == 0:
		return []byte(id)
	case rev == 0:
		return []byte(id + " " + token)
	}
	return []byte(id + " " + token + " " + strconv.FormatUint(rev, 10))
}

// parseWorkMessage undoes workMessage; a message of a node that wrote no
// token has an empty one, and one that is no rescue a zero revision.
func parseWorkMessage(b []byte) (id, token string, rev uint64) {
	id, rest, _ := strings.Cut(string(b), " ")
	token, revText, _ := strings.Cut(rest, " ")
	rev, _ = strconv.ParseUint(revText, 10, 64)
	return id, token, rev
}

// requeue gives a queued job that is submitted again (a client's retry of
// its id) a work message of its own: its record may have none left. The
// job's first message can be gone while its record still says queued: a
// record whose create was stored late (its answer lost while a server
// died) after a node had acked the message as one without a record
// (take, recordWait), then found by the client's retry. Published again
// under the same message id, that message was a duplicate to JetStream
// for dedupWindow after the first and dropped without an error, and the
// job waited for good.
//
// A second message of the same token is no answer either: any delivered
// message claims its job, also one running on another node (that is how a
// dead node's jobs move on), so two live messages of one job can run it
// twice. requeue therefore writes a new token into the record
// (compare-and-set on rev) and then publishes a message naming it: a new
// message id, and every earlier message of the job names an old token and
// is acked without running anything (take). A record that moved on
// meanwhile (claimed, cancelled, or requeued by another retry, which
// queues its own message) needs nothing from this one.
func (c *Cluster) requeue(ctx context.Context, old *Record, rev uint64) error {
	if old.Token == "" {
		// A record of an older node, whose messages carry no token and
		// so cannot be told apart: as that node did.
		return c.publish(ctx, old.ID, old.Class, old.Target, "", 0)
	}
	fresh := *old
	fresh.Token = newToken()
	var newRev uint64
	err := retryTransient(ctx, func(ctx context.Context) (err error) {
		newRev, err = c.put(ctx, &fresh, rev)
		return err
	})
	if err != nil {
		// The write may have been stored with its answer lost: then the
		// record names the new token and must get its message.
		if cur, curRev, gerr := c.get(ctx, old.ID); gerr == nil && cur.Token == fresh.Token {
			newRev, err = curRev, nil
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists):
		return nil
	case err != nil:
		return fmt.Errorf("cluster: queue %s again: %v: %w", old.ID, err, ErrUnavailable)
	}
	if err := c.publish(ctx, fresh.ID, fresh.Class, fresh.Target, fresh.Token, 0); err != nil {
		// Put the old token back, so that the job's first message, if it
		// is still queued, runs it; the client, told of the error,
		// retries.
		bctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_ = c.update(bctx, old, newRev)
		cancel()
		return err
	}
	*old = fresh
	return nil
}

// publish queues a job's id for the node target (the routing policy's
// choice), or for any node when target is empty; rev is the revision of a
// rescued job's record (else 0). The message id that JetStream
// deduplicates on is the body: a publish retried within one submit, or the
// same rescue by several nodes, is stored once, and another submit's is
// not mistaken for it.
//
// JetStream drops a message whose id it saw within dedupWindow even when
// that message was consumed since, so every publish must name a body that
// no consumed message of a job that still needs one had:
//   - a submit's, its own new token;
//   - a retried submit's of a queued job, a new token it writes into the
//     record first (requeue);
//   - a job given back by its node (runClaimed), the token of a submit
//     that claimed the job and so published nothing;
//   - a rescue or a release at shutdown, the record's revision: a message
//     of that revision is consumed only once the record has moved past it
//     (claimed through it, which the record notes in Record.Rescue, or
//     ended); a claim whose write failed gives the message back.
func (c *Cluster) publish(ctx context.Context, id string, class job.Class, target, token string, rev uint64) error {
	subject := workSubject + string(class)
	if target != "" {
		subject += "." + target
	}
	body := workMessage(id, token, rev)
	msgID := strings.ReplaceAll(string(body), " ", ".")
	err := retryTransient(ctx, func(ctx context.Context) error {
		_, err := c.js.Publish(ctx, subject, body, jetstream.WithMsgID(msgID))
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster: queue %s: %v: %w", id, err, ErrUnavailable)
	}
	return nil
}

// get reads a job's record and its revision. Not found wraps
// job.ErrNotFound.
func (c *Cluster) get(ctx context.Context, id string) (*Record, uint64, error) {
	if !validID.MatchString(id) {
		return nil, 0, fmt.Errorf("cluster: job %q: %w", id, job.ErrNotFound)
	}
	var value []byte
	var rev uint64
	err := retryTransient(ctx, func(ctx context.Context) (err error) {
		value, rev, err = c.readLeader(ctx, key(id))
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("cluster: job %s: %w", id, job.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: job %s: %v: %w", id, err, ErrUnavailable)
	}
	var rec Record
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, 0, fmt.Errorf("cluster: job %s: decode: %w", id, err)
	}
	if rec.Seq == 0 {
		rec.Seq = rev
	}
	return &rec, rev, nil
}

// readLeader reads a key of the registry from its stream's leader. nats.go's
// KeyValue.Get uses direct gets, which any replica answers, and a follower
// may not have the latest write yet: a job submitted on one node could read
// as absent on another, and a node pulling its message would drop it as
// deleted. The leader's STREAM.MSG.GET sees every acknowledged write.
func (c *Cluster) readLeader(ctx context.Context, k string) ([]byte, uint64, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + jobsBucket + "." + k})
	msg, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+jobsBucket, req)
	if err != nil {
		return nil, 0, err
	}
	var resp struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, 0, fmt.Errorf("decode STREAM.MSG.GET answer: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, 0, jetstream.ErrKeyNotFound
	case resp.Error != nil:
		// As nats.go reports it, so that transient sees a 503 (no
		// leader yet) as worth a retry.
		return nil, 0, &jetstream.APIError{Code: resp.Error.Code, ErrorCode: jetstream.ErrorCode(resp.Error.ErrCode), Description: resp.Error.Description}
	case resp.Message == nil:
		return nil, 0, errors.New("STREAM.MSG.GET: empty answer")
	}
	// A deleted or purged key is a marker message with an operation header.
	if h := string(resp.Message.Hdrs); strings.Contains(h, "KV-Operation: DEL") || strings.Contains(h, "KV-Operation: PURGE") {
		return nil, 0, jetstream.ErrKeyNotFound
	}
	return resp.Message.Data, resp.Message.Seq, nil
}

// Get returns a job's record from the registry (read from JetStream, not
// from this node's view, so that a submit on one node is visible on every
// other at once).
func (c *Cluster) Get(ctx context.Context, id string) (*Record, error) {
	if r := c.recentRecord(id); r != nil {
		return r, nil
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rec, _, err := c.get(ctx, id)
	return rec, err
}

// List returns up to limit records in state (all states when empty), newest
// first, and the counts per state, from this node's view of the registry
// (a watch: it trails JetStream by milliseconds).
func (c *Cluster) List(state job.State, limit int) ([]*Record, map[job.State]int) {
	c.viewMu.RLock()
	counts := map[job.State]int{}
	var out []*Record
	for _, r := range c.view {
		counts[r.State]++
		if state == "" || r.State == state {
			out = append(out, r)
		}
	}
	c.viewMu.RUnlock()
	sort.Slice(out, func(a, b int) bool {
		if !out[a].CreatedAt.Equal(out[b].CreatedAt) {
			return out[a].CreatedAt.After(out[b].CreatedAt)
		}
		return out[a].Seq > out[b].Seq
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, counts
}

// remember puts a record (without its workflow) into the view at once, so
// that a list on the submitting node shows its own submit.
func (c *Cluster) remember(r *Record) {
	s := *r
	s.Workflow = nil
	c.viewMu.Lock()
	old, ok := c.view[s.ID]
	if !ok || old.Seq <= s.Seq || old.State == job.Queued {
		c.view[s.ID] = &s
		c.indexDirect(s.ID, &s)
	}
	c.viewMu.Unlock()
	c.ended(old, &s)
}

// ended tells Local.Ended of a record that the view now has as ended and
// had not before.
func (c *Cluster) ended(old, now *Record) {
	if c.local.Ended != nil && terminal(now.State) && (old == nil || !terminal(old.State)) {
		c.local.Ended(&now.Job, now.Experiment)
	}
}

// watch keeps the view of the registry until ctx ends.
func (c *Cluster) watch(ctx context.Context) {
	watchKV(ctx, c.jobs, func(e jetstream.KeyValueEntry) {
		id := idFromKey(e.Key())
		var rec Record
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &rec) != nil {
			c.viewMu.Lock()
			delete(c.view, id)
			c.indexDirect(id, nil)
			c.viewMu.Unlock()
			return
		}
		if rec.Seq == 0 {
			rec.Seq = e.Revision()
		}
		rec.Workflow = nil
		c.viewMu.Lock()
		old := c.view[id]
		c.view[id] = &rec
		c.indexDirect(id, &rec)
		c.viewMu.Unlock()
		c.ended(old, &rec)
	})
}

// watchRefresh is how often a watch is started again from the revision
// after the last it saw. A watch whose consumer lived on a NATS server
// that died can stay silent for good (seen after a kill -9 of one of three
// servers); starting again from where it was costs one consumer and
// replays nothing.
const watchRefresh = 3 * time.Second

// watchKV applies every change of kv to apply, in order, until ctx ends:
// the current values first, then each update, watching again (from the
// next revision) every watchRefresh and after any failure.
func watchKV(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry)) {
	var last uint64
	for ctx.Err() == nil {
		var opts []jetstream.WatchOpt
		if last > 0 {
			opts = append(opts, jetstream.ResumeFromRevision(last+1))
		}
		w, err := kv.WatchAll(ctx, opts...)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				continue
			}
		}
		refresh := time.NewTimer(watchRefresh)
	updates:
		for {
			select {
			case <-ctx.Done():
				break updates
			case <-refresh.C:
				break updates
			case e, ok := <-w.Updates():
				if !ok {
					break updates
				}
				if e == nil {
					continue // the end of the initial values
				}
				if e.Revision() <= last {
					continue
				}
				last = e.Revision()
				apply(e)
			}
		}
		refresh.Stop()
		_ = w.Stop()
	}
}

// Cancel cancels a job anywhere in the cluster: a queued one in the
// registry (the node that pulls its message then drops it), a running one
// by asking its node. It returns the record as it then stands.
func (c *Cluster) Cancel(ctx context.Context, id string) (*Record, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for range 5 {
		rec, rev, err := c.get(ctx, id)
		if err != nil {
			return nil, err
		}
		switch {
		case terminal(rec.State):
			return rec, fmt.Errorf("cluster: cancel %s: job is %s: %w", id, rec.State, job.ErrBadTransition)
		case rec.State == job.Queued:
			rec.State, rec.FinishedAt = job.Cancelled, time.Now().UTC()
			data, _ := json.Marshal(rec)
			if _, err := c.jobs.Update(ctx, key(id), data, rev); err != nil {
				if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
					continue // claimed meanwhile: cancel it on its node
				}
				return nil, fmt.Errorf("cluster: cancel %s: %v: %w", id, err, ErrUnavailable)
			}
			c.remember(rec)
			return rec, nil
		case rec.Node == c.cfg.NodeID:
			if _, err := c.local.Cancel(id); err != nil && !errors.Is(err, job.ErrBadTransition) {
				return nil, err
			}
		default:
			if _, err := c.nc.RequestWithContext(ctx, cancelSubject+rec.Node, []byte(id)); err != nil {
				return nil, fmt.Errorf("cluster: cancel %s on node %s: %v: %w", id, rec.Node, err, ErrUnavailable)
			}
		}
		// The node records the cancellation when its worker has stopped.
		for ctx.Err() == nil {
			if r, _, err := c.get(ctx, id); err == nil && terminal(r.State) {
				return r, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return nil, fmt.Errorf("cluster: cancel %s: %w", id, ctx.Err())
	}
	return nil, fmt.Errorf("cluster: cancel %s: the job kept changing: %w", id, ErrUnavailable)
}

// onCancel answers another node's request to cancel a job this node runs.
func (c *Cluster) onCancel(m *nats.Msg) {
	id := string(m.Data)
	_, err := c.local.Cancel(id)
	reply := "ok"
	if err != nil {
		reply = err.Error()
	}
	_ = m.Respond([]byte(reply))
}

// NodeState is what a node knows of itself: what a routing policy needs to
// place a job on it (decision.NodeView's fields). The node fills it
// (Local.State) at every heartbeat.
type NodeState struct {
	// Queued and Running count the jobs it holds; Workers its worker
	// processes that are up, IdleWorkers those of them without a job.
	Queued      int `json:"queued"`
	Running     int `json:"running"`
	Workers     int `json:"workers"`
	IdleWorkers int `json:"idle_workers"`
	// FreeVRAM is the unreserved VRAM over its devices; UsableVRAM the
	// largest device's usable memory.
	FreeVRAM   uint64 `json:"free_vram_bytes"`
	UsableVRAM uint64 `json:"usable_vram_bytes"`
	// H2DBytesPerS, DiskBytesPerS and RemoteBytesPerS are the node's load
	// rates: host → device as its workers' loads measured it (before any
	// load, its devices' own rate), disk → RAM and source → disk as its
	// tiers measured them (0 until measured: the routing policy then
	// assumes its defaults).
	H2DBytesPerS    uint64 `json:"h2d_bytes_per_s"`
	DiskBytesPerS   uint64 `json:"disk_bytes_per_s"`
	RemoteBytesPerS uint64 `json:"remote_bytes_per_s"`
	// Wait is the node's estimate of the time until it could start one
	// more job: the cost model's estimates of its queued jobs and the rest
	// of its running ones, over its workers; 0 with an idle worker and
	// nothing queued.
	Wait time.Duration `json:"wait_ns"`
	// VRAM, RAM and Disk are the models resident in each tier, sorted.
	VRAM []string `json:"vram"`
	RAM  []string `json:"ram"`
	Disk []string `json:"disk"`
}

// NodeInfo is a node's heartbeat in the KILN_nodes bucket: its state, its
// API address and its health, written every second with a TTL of a few
// seconds, so that a node that dies leaves the bucket on its own.
type NodeInfo struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// Healthy: connected to NATS with at least one worker up, so taking
	// work.
	Healthy bool `json:"healthy"`
	// Held is the number of cluster jobs this node claimed and has not
	// finished.
	Held int `json:"held"`
	// Routed counts the jobs routed to this node that wait in its
	// consumers, not pulled yet (it pulls only what its workers and
	// prefetch hold); RoutedWork is their work by the cost model, as
	// Routed × the mean estimate of the jobs it took.
	Routed     int           `json:"routed"`
	RoutedWork time.Duration `json:"routed_work_ns"`
	At         time.Time     `json:"at"`
	// Experiment is the routing experiment this node runs (Local.Leading),
	// for the other nodes to follow.
	Experiment json.RawMessage `json:"experiment,omitempty"`
	NodeState
}

// Nodes lists the nodes whose heartbeat is alive, sorted by id, from this
// node's watch of KILN_nodes: no network call, so placement can ask it for
// every job. A node is alive while its last heartbeat arrived within
// nodeTTL (a KV TTL expiry sends no notice to a watch, so the age is
// judged here, on this node's clock, by when the heartbeat arrived).
func (c *Cluster) Nodes() []NodeInfo {
	now := time.Now()
	c.viewMu.RLock()
	out := make([]NodeInfo, 0, len(c.nodeView))
	for _, n := range c.nodeView {
		if now.Sub(n.arrived) <= nodeTTL {
			out = append(out, n.info)
		}
	}
	c.viewMu.RUnlock()
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// alive reports whether node id's heartbeat is alive in this node's view
// (as Nodes judges it).
func (c *Cluster) alive(id string) bool {
	c.viewMu.RLock()
	defer c.viewMu.RUnlock()
	n, ok := c.nodeView[id]
	return ok && time.Since(n.arrived) <= nodeTTL
}

// seenNode is a heartbeat and when it arrived here.
type seenNode struct {
	info    NodeInfo
	arrived time.Time
}

// watchNodes keeps nodeView until ctx ends.
func (c *Cluster) watchNodes(ctx context.Context) {
	watchKV(ctx, c.nodes, func(e jetstream.KeyValueEntry) {
		c.viewMu.Lock()
		defer c.viewMu.Unlock()
		var ni NodeInfo
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &ni) != nil {
			delete(c.nodeView, e.Key())
			return
		}
		// The initial values may be old: judge them by their own time,
		// later ones by their arrival.
		arrived := time.Now()
		if at := ni.At.Local(); at.Before(arrived) && e.Delta() > 0 {
			arrived = at
		}
		c.nodeView[e.Key()] = seenNode{info: ni, arrived: arrived}
		delete(c.routedSince, e.Key()) // its heartbeat counts them now
	})
}
