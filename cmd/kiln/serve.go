package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/config"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/node"
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
	fs.StringVar(&c.file, "config", "", "config `FILE` (YAML) layered over the embedded default")
	fs.Var(&c.sets, "set", "override one config key `k=v`, e.g. --set workers.per_device=1 (repeatable)")
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
	fs.StringVar(&s.listen, "listen", "", "HTTP listen `ADDR` (default from config: 127.0.0.1:8188)")
	fs.StringVar(&s.dataDir, "data-dir", "", "`DIR` for the queue database and outputs")
	fs.StringVar(&s.models, "models", "", "local model store `DIR` (ComfyUI models layout)")
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

const serveHelp = `usage: kiln serve [flags]

Runs the kiln daemon: the HTTP API, the job queue, the workers on the GPUs.
The config is the embedded default (kiln config print), then --config FILE,
then KILN_* environment variables, then --set k=v, then the flags below;
a daemon is usually started as kiln serve --config /etc/kiln/kiln.yaml
(docs/deploy.md: the systemd unit and the container image). It logs a
warning when the models directory does not exist or holds no models.
`

// warnModelsDir logs a warning when the models directory is missing or
// empty: kiln still starts (models can be added and refreshed) but every
// job that names a model fails until then.
func warnModelsDir(log zerolog.Logger, dir string) bool {
	abs, _ := filepath.Abs(dir)
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		log.Warn().Str("models_dir", abs).Err(err).Msg("the models directory does not exist: kiln serves no models (set --models DIR or models_dir)")
	case !st.IsDir():
		log.Warn().Str("models_dir", abs).Msg("the models directory is not a directory: kiln serves no models")
	default:
		ents, _ := os.ReadDir(dir)
		if len(ents) == 0 {
			log.Warn().Str("models_dir", abs).Msg("the models directory is empty: kiln serves no models (ComfyUI layout: checkpoints/, loras/, vae/, ...)")
			return true
		}
		return false
	}
	return true
}

func cmdServe(args []string) error {
	fs := newFlags("serve", serveHelp)
	var sf serveFlags
	sf.register(fs.FlagSet)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("serve", "unexpected argument %q", pos[0])
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
	warned := warnModelsDir(log, cfg.ModelsDir)
	n, err := node.New(cfg, node.Options{Log: log})
	if err != nil {
		return err
	}
	if n.Catalog != nil && !warned {
		if models, err := n.Catalog.List(); err == nil && len(models) == 0 {
			log.Warn().Str("models_dir", cfg.ModelsDir).Msg("the model catalog is empty: jobs that name a model will fail until models are added (kiln models refresh)")
		}
	}
	if err := n.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info().Msg("kiln stopped")
	return nil
}
