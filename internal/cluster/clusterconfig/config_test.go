package clusterconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServers(t *testing.T) {
	c := Config{NATS: []string{"nats://a:4222, nats://b:4222", "", " nats://c:4222 "}}
	got := strings.Join(c.Servers(), " ")
	if got != "nats://a:4222 nats://b:4222 nats://c:4222" {
		t.Fatalf("Servers() = %q", got)
	}
	if !c.Enabled() {
		t.Fatal("Enabled() = false with three servers")
	}
	if (Config{NATS: []string{" ", ""}}).Enabled() {
		t.Fatal("Enabled() = true with blank servers only")
	}
}

func TestWithDefaults(t *testing.T) {
	one := Config{NATS: []string{"nats://a:4222"}}.WithDefaults()
	if one.Replicas != 1 {
		t.Errorf("one server: replicas %d, want 1", one.Replicas)
	}
	three := Config{NATS: []string{"nats://a:1,nats://b:2,nats://c:3"}}.WithDefaults()
	if three.Replicas != DefaultReplicas || three.AckWait != DefaultAckWait || three.NodeID == "" {
		t.Errorf("three servers: %+v", three)
	}
	if err := three.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("a single node (no servers) must validate: %v", err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "kiln.creds")
	if err := os.WriteFile(creds, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := Config{NATS: []string{"nats://127.0.0.1:4222"}, NodeID: "n1"}
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantErr string // "" means valid
	}{
		{name: "valid", edit: func(*Config) {}},
		{name: "tls url", edit: func(c *Config) { c.NATS = []string{"tls://h:4222"} }},
		{name: "http url", edit: func(c *Config) { c.NATS = []string{"http://h:4222"} }, wantErr: "cluster.nats"},
		{name: "no host", edit: func(c *Config) { c.NATS = []string{"nats://"} }, wantErr: "cluster.nats"},
		{name: "node id with space", edit: func(c *Config) { c.NodeID = "a b" }, wantErr: "cluster.node_id"},
		{name: "node id with dot", edit: func(c *Config) { c.NodeID = "a.b" }, wantErr: "cluster.node_id"},
		{name: "replicas 7", edit: func(c *Config) { c.Replicas = 7 }, wantErr: "cluster.replicas"},
		{name: "replicas -1", edit: func(c *Config) { c.Replicas = -1 }, wantErr: "cluster.replicas"},
		{name: "ack wait 1ms", edit: func(c *Config) { c.AckWait = time.Millisecond }, wantErr: "cluster.ack_wait"},
		{name: "max attempts -1", edit: func(c *Config) { c.MaxAttempts = -1 }, wantErr: "cluster.max_attempts"},
		{name: "prefetch -1", edit: func(c *Config) { c.Prefetch = -1 }, wantErr: "cluster.prefetch"},
		{name: "job ttl 1s", edit: func(c *Config) { c.JobTTL = time.Second }, wantErr: "cluster.job_ttl"},
		{name: "cert without key", edit: func(c *Config) { c.TLSCert = creds }, wantErr: "cluster.tls_cert and cluster.tls_key"},
		{name: "creds present", edit: func(c *Config) { c.CredsFile = creds }},
		{name: "creds missing", edit: func(c *Config) { c.CredsFile = filepath.Join(dir, "none") }, wantErr: "cluster.creds_file"},
		{name: "ca is a dir", edit: func(c *Config) { c.TLSCA = dir }, wantErr: "cluster.tls_ca"},
		{name: "password without user", edit: func(c *Config) { c.Password = "p" }, wantErr: "cluster.password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			err := c.WithDefaults().Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate() = %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}

func TestDefaultNodeIDIsValid(t *testing.T) {
	if id := DefaultNodeID(); !validID.MatchString(id) {
		t.Fatalf("DefaultNodeID() = %q is not a valid node id", id)
	}
}
