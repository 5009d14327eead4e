package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/logging"
)

// natsMaxPayload is the largest message the embedded server takes. A job's
// record in the cluster carries its workflow verbatim (internal/cluster), and
// nats-server warns about anything above 8 MiB, so that is the bound; a
// larger workflow is refused by the cluster with a 413 at submit.
const natsMaxPayload = 8 << 20

const natsHelp = `usage: kiln nats --store-dir DIR [flags]

Runs one NATS server with JetStream on, from the nats-server module linked
into kiln, for a kiln cluster (docs/cluster.md): tests, demos and small
deployments need no separate download. Three servers make a cluster that
survives the loss of one:

  kiln nats --port 4222 --cluster-port 6222 --routes nats://127.0.0.1:6223,nats://127.0.0.1:6224 --store-dir d1
  kiln nats --port 4223 --cluster-port 6223 --routes nats://127.0.0.1:6222,nats://127.0.0.1:6224 --store-dir d2
  kiln nats --port 4224 --cluster-port 6224 --routes nats://127.0.0.1:6222,nats://127.0.0.1:6223 --store-dir d3

then kiln serve --set cluster.nats=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224.
Peers that are not up yet are normal while a cluster forms: the server
retries them quietly. Production points kiln at its own NATS cluster.
`

// cmdNATS runs one server of a NATS cluster with JetStream on, from the
// nats-server module linked into kiln: tests, demos and small deployments
// need no separate download. Production points kiln at its own NATS cluster
// (cluster.nats) and never runs this.
func cmdNATS(args []string) error {
	fs := newFlags("nats", natsHelp)
	host := fs.String("host", "127.0.0.1", "address the client and cluster ports listen on")
	port := fs.Int("port", 4222, "client port (kiln nodes connect here: cluster.nats)")
	clusterPort := fs.Int("cluster-port", 6222, "cluster port (other servers' --routes point here); 0 runs a server alone")
	routes := fs.String("routes", "", "the other servers' cluster URLs, comma-separated: nats://127.0.0.1:6223,nats://127.0.0.1:6224")
	storeDir := fs.String("store-dir", "", "JetStream's storage directory (required: the streams live here)")
	name := fs.String("name", "", "server name, unique in the cluster (default kiln-nats-<port>)")
	clusterName := fs.String("cluster-name", "kiln", "cluster name; every server of one cluster uses the same")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("nats", "unexpected argument %q", pos[0])
	}
	if *storeDir == "" {
		return usagef("nats", "--store-dir is required (JetStream keeps its streams there)")
	}
	if *port < 1 || *port > 65535 || *clusterPort < 0 || *clusterPort > 65535 {
		return usagef("nats", "--port %d / --cluster-port %d: ports are 1 to 65535", *port, *clusterPort)
	}
	dir, err := filepath.Abs(*storeDir)
	if err != nil {
		return fmt.Errorf("nats: store dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("nats: store dir: %w", err)
	}
	if *name == "" {
		*name = "kiln-nats-" + strconv.Itoa(*port)
	}
	lvl, err := zerolog.ParseLevel(*logLevel)
	if err != nil {
		return fmt.Errorf("nats: --log-level %q: %w", *logLevel, err)
	}
	// Colours only on a terminal: a log file or a test's buffer gets plain text.
	st, _ := os.Stderr.Stat()
	plain := st == nil || st.Mode()&os.ModeCharDevice == 0
	log := logging.Component(zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly, NoColor: plain}).
		Level(lvl).With().Timestamp().Logger(), "nats").With().Str("server", *name).Logger()

	opts := &server.Options{
		ServerName: *name,
		Host:       *host,
		Port:       *port,
		JetStream:  true,
		StoreDir:   dir,
		MaxPayload: natsMaxPayload,
		// kiln handles SIGINT/SIGTERM itself, below, so that it can log.
		NoSigs: true,
	}
	if *clusterPort > 0 {
		opts.Cluster = server.ClusterOpts{Name: *clusterName, Host: *host, Port: *clusterPort}
		if *routes != "" {
			for _, r := range strings.Split(*routes, ",") {
				if _, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimSpace(r), "nats://")); err != nil {
					return usagef("nats", "--routes %q: want nats://host:port", r)
				}
			}
			opts.Routes = server.RoutesFromStr(*routes)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log: log}, lvl <= zerolog.DebugLevel, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats: server did not accept connections on %s:%d within 30 s", *host, *port)
	}
	log.Info().Str("client", fmt.Sprintf("nats://%s:%d", *host, *port)).Int("cluster_port", *clusterPort).
		Str("routes", *routes).Str("store_dir", dir).Msg("nats serving (JetStream on)")

	ctx, stop := signalContext()
	defer stop()
	done := make(chan struct{})
	go func() { srv.WaitForShutdown(); close(done) }()
	select {
	case <-ctx.Done():
		srv.Shutdown()
		<-done
	case <-done:
	}
	log.Info().Msg("nats stopped")
	return nil
}

// natsLogger hands the NATS server's log to zerolog.
type natsLogger struct{ log zerolog.Logger }

// benignWhileStarting are the server's complaints that only mean a peer is
// not up yet, which is how a cluster starts (servers come up one by one):
// they are logged at debug, so that a cluster that is forming says nothing
// alarming. A peer that never comes shows in JetStream's own warnings.
var benignWhileStarting = []string{
	"Error trying to connect to route",
	"JetStream cluster no metadata leader",
	"Waiting for routing to be established",
	"JetStream has not established contact with a meta leader",
}

func benign(msg string) bool {
	for _, b := range benignWhileStarting {
		if strings.Contains(msg, b) {
			return true
		}
	}
	return false
}

func (l natsLogger) Noticef(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, " - rid:") || strings.Contains(msg, " - cid:") {
		// Each route and client connection: the server's chatter, not news.
		l.log.Debug().Msg(msg)
		return
	}
	l.log.Info().Msg(msg)
}
func (l natsLogger) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if benign(msg) {
		l.log.Debug().Msg(msg)
		return
	}
	l.log.Warn().Msg(msg)
}
func (l natsLogger) Fatalf(format string, v ...any) { l.log.Fatal().Msg(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if benign(msg) {
		l.log.Debug().Msg(msg)
		return
	}
	l.log.Error().Msg(msg)
}
func (l natsLogger) Debugf(format string, v ...any) { l.log.Debug().Msg(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any) { l.log.Trace().Msg(fmt.Sprintf(format, v...)) }
