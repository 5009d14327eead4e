// Package clusterconfig is the cluster section of kiln's config: the NATS
// servers a node joins, its name in the cluster, and how the cluster's
// streams are replicated and redelivered.
//
// It is a package of its own so that internal/config, which assembles every
// section's type, does not link the NATS client; the code that uses this
// section is internal/cluster. An empty NATS list means a single node: kiln
// is then exactly what it is without a cluster (its bbolt queue, no NATS).
//
//	cfg := clusterconfig.Config{NATS: []string{"nats://10.0.0.1:4222"}}
//	err := cfg.WithDefaults().Validate()
package clusterconfig

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Config is the cluster section.
type Config struct {
	// NATS are the URLs of the NATS servers (JetStream on) the node joins;
	// empty (the default) runs a single node. A comma-separated string is
	// accepted too, for --set cluster.nats=nats://a:4222,nats://b:4222.
	NATS []string `koanf:"nats"`
	// NodeID names this node in the cluster: the "node" of the jobs it
	// runs. Empty takes the hostname. Letters, digits, '-' and '_'.
	NodeID string `koanf:"node_id"`
	// Replicas is the replication factor of the cluster's streams, KV
	// buckets and object store: 3 by default, 1 when NATS lists one
	// server (a lone server cannot hold three copies).
	Replicas int `koanf:"replicas"`
	// AckWait is how long a node may hold a job without a sign of life
	// before JetStream gives it to another node. A node that holds a job
	// (queued or running on it) says "in progress" every AckWait/3, so a
	// long job is never redelivered while its node lives; this is the time
	// from a node's death to its jobs restarting elsewhere.
	AckWait time.Duration `koanf:"ack_wait"`
	// MaxAttempts bounds the nodes a job is started on (a node's death
	// costs one); beyond it the job fails.
	MaxAttempts int `koanf:"max_attempts"`
	// Prefetch is how many jobs a node takes beyond its ready workers, so
	// that a worker that finishes finds the next job already local; at
	// least 1 (0 means the default, 1).
	Prefetch int `koanf:"prefetch"`
	// JobTTL is how long the cluster keeps a job's record (and outputs)
	// after its last change.
	JobTTL time.Duration `koanf:"job_ttl"`
	// CredsFile, NKeyFile, User/Password and Token authenticate to NATS;
	// TLSCert/TLSKey are a client certificate and TLSCA the roots that
	// verify the servers. They are passed to nats.go as they are.
	CredsFile string `koanf:"creds_file"`
	NKeyFile  string `koanf:"nkey_file"`
	User      string `koanf:"user"`
	Password  string `koanf:"password"`
	Token     string `koanf:"token"`
	TLSCert   string `koanf:"tls_cert"`
	TLSKey    string `koanf:"tls_key"`
	TLSCA     string `koanf:"tls_ca"`
	// IgnoreDiscoveredServers has the node connect only to the servers in
	// NATS, never to those the servers announce: for a node that reaches
	// NATS through a proxy, a NAT or a load balancer, where the addresses
	// the servers announce do not lead.
	IgnoreDiscoveredServers bool `koanf:"ignore_discovered_servers"`
}

// Enabled reports whether the node is one of a cluster.
func (c Config) Enabled() bool { return len(c.Servers()) > 0 }

// Servers is NATS with comma-separated entries split and blanks dropped.
func (c Config) Servers() []string {
	var out []string
	for _, s := range c.NATS {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// Defaults that WithDefaults puts in place of zero fields.
const (
	DefaultReplicas    = 3
	DefaultAckWait     = 30 * time.Second
	DefaultMaxAttempts = 3
	DefaultPrefetch    = 1
	DefaultJobTTL      = 7 * 24 * time.Hour
)

// WithDefaults returns a copy of c with zero fields at their defaults; the
// node id becomes the hostname, and replicas 1 when only one server is
// named. Negative values are kept for Validate to report.
func (c Config) WithDefaults() Config {
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
		if len(c.Servers()) == 1 {
			c.Replicas = 1
		}
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.JobTTL == 0 {
		c.JobTTL = DefaultJobTTL
	}
	if c.NodeID == "" {
		c.NodeID = DefaultNodeID()
	}
	return c
}

// DefaultNodeID is the hostname cut to a valid node id, or "local".
func DefaultNodeID() string {
	h, err := os.Hostname()
	if err != nil {
		return "local"
	}
	h = invalidIDChars.ReplaceAllString(h, "-")
	if len(h) > 64 {
		h = h[:64]
	}
	if !validID.MatchString(h) {
		return "local"
	}
	return h
}

var (
	validID        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	invalidIDChars = regexp.MustCompile(`[^A-Za-z0-9_-]`)
)

// Validate checks a config after WithDefaults. Messages name the key.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	for _, s := range c.Servers() {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
			errs = append(errs, fmt.Errorf("cluster.nats: %q is not a NATS URL (nats://host:port)", s))
		}
	}
	if !validID.MatchString(c.NodeID) {
		errs = append(errs, fmt.Errorf("cluster.node_id: %q: want 1 to 64 letters, digits, '-' or '_', starting with a letter or digit", c.NodeID))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("cluster.replicas: must be 1 to 5 (JetStream's limit), got %d", c.Replicas))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("cluster.ack_wait: must be ≥ 1s, got %s", c.AckWait))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("cluster.max_attempts: must be ≥ 1, got %d", c.MaxAttempts))
	}
	if c.Prefetch < 1 {
		errs = append(errs, fmt.Errorf("cluster.prefetch: must be ≥ 1, got %d", c.Prefetch))
	}
	if c.JobTTL < time.Minute {
		errs = append(errs, fmt.Errorf("cluster.job_ttl: must be ≥ 1m, got %s", c.JobTTL))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("cluster.tls_cert and cluster.tls_key go together"))
	}
	// The files are read when the node connects; a missing one is said
	// here, at start, by its key rather than as a connection error.
	for _, f := range []struct{ key, path string }{
		{"creds_file", c.CredsFile}, {"nkey_file", c.NKeyFile},
		{"tls_cert", c.TLSCert}, {"tls_key", c.TLSKey}, {"tls_ca", c.TLSCA},
	} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("cluster.%s: %w", f.key, err))
		} else if st.IsDir() {
			errs = append(errs, fmt.Errorf("cluster.%s: %s is a directory, not a file", f.key, f.path))
		}
	}
	if c.Password != "" && c.User == "" {
		errs = append(errs, errors.New("cluster.password: needs cluster.user"))
	}
	return errors.Join(errs...)
}
