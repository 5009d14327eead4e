package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/kernel/config"
	"github.com/kiln-gpu/kiln/kernel/logging"
	"github.com/kiln-gpu/kiln/kernel/node"
)

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// configFlags are the flags every command that loads config shares.
type configFlags struct {
	file string
	sets multiFlag
}

func (c *configFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.file, "config", "", "config file (YAML) layered over the embedded default")
	fs.Var(&c.sets, "set", "override one config key, e.g. --set workers.per_device=1 (repeatable)")
}

// load applies default < file < KILN_* env < --set < the command's own flags.
func (c *configFlags) load(extra ...string) (*config.Config, error) {
	return config.Load(config.LoadOptions{File: c.file, Env: os.Environ(), Sets: append(append([]string{}, c.sets...), extra...)})
}

// serveFlags are shared by serve and demo.
type serveFlags struct {
	configFlags
	listen, dataDir, models string
}

func (s *serveFlags) register(fs *flag.FlagSet) {
	s.configFlags.register(fs)
	fs.StringVar(&s.listen, "listen", "", "HTTP listen address (default from config: 127.0.0.1:8188)")
	fs.StringVar(&s.dataDir, "data-dir", "", "directory for the queue database and outputs")
	fs.StringVar(&s.models, "models", "", "local model store (ComfyUI models layout)")
}

func (s *serveFlags) overrides() []string {
	var out []string
	if s.listen != "" {
		out = append(out, "listen="+s.listen)
	}
	if s.dataDir != "" {
		out = append(out, "data_dir="+s.dataDir)
	}
	if s.models != "" {
		out = append(out, "models_dir="+s.models)
	}
	return out
}

func newLogger(cfg *config.Config, w io.Writer) (zerolog.Logger, error) {
	return logging.New(cfg.Log, w)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var sf serveFlags
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := sf.load(sf.overrides()...)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	n, err := node.New(cfg, node.Options{Log: log})
	if err != nil {
		return err
	}
	if err := n.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info().Msg("kiln stopped")
	return nil
}
