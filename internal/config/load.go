package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/kiln-gpu/kiln/configs"
)

// EnvPrefix starts every environment variable that sets a config key.
const EnvPrefix = "KILN_"

// reservedEnv are KILN_ variables that are not config keys: the CLI client's
// address and what the kernel passes to the worker processes it starts.
// Load skips them instead of reporting them as unknown keys.
var reservedEnv = map[string]bool{
	"KILN_ADDR":                 true,
	"KILN_ADMIN_TOKEN":          true, // internal/api.AdminToken reads it
	"KILN_WORKER_ID":            true,
	"KILN_PROTOCOL":             true,
	"KILN_SIM_CRASH_AFTER_JOBS": true,
}

// LoadOptions are the layers above the embedded default.
type LoadOptions struct {
	// File is a YAML config file; empty means none.
	File string
	// Env is the process environment as KEY=VALUE (normally os.Environ());
	// only KILN_ variables are read.
	Env []string
	// Sets are "key=value" overrides (from repeatable --set flags), applied
	// in order.
	Sets []string
	// IgnoreEnv names further KILN_ variables that are not config keys.
	IgnoreEnv []string
}

// Load merges the embedded default, opts.File, the KILN_ environment and
// opts.Sets, in that order, fills section defaults and validates the result.
func Load(opts LoadOptions) (*Config, error) {
	var fileData []byte
	if opts.File != "" {
		b, err := file.Provider(opts.File).ReadBytes()
		if err != nil {
			return nil, fmt.Errorf("config: read %s: %w", opts.File, err)
		}
		fileData = b
	}
	return load(configs.Default, opts.File, fileData, opts)
}

// ValidateFile checks the config file at path layered over the embedded
// default (without the environment), for `kiln config validate FILE`.
func ValidateFile(path string) error {
	_, err := Load(LoadOptions{File: path})
	return err
}

// load does Load's work on the default and file bytes; fileData is
// ignored when fileName is empty.
func load(defaults []byte, fileName string, fileData []byte, opts LoadOptions) (*Config, error) {
	k := koanf.New(".")
	if err := loadYAML(k, "embedded default", defaults); err != nil {
		return nil, err
	}
	if fileName != "" {
		if err := loadYAML(k, fileName, fileData); err != nil {
			return nil, err
		}
	}
	if err := loadEnv(k, opts); err != nil {
		return nil, err
	}
	if err := loadSets(k, opts.Sets); err != nil {
		return nil, err
	}
	var cfg Config
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: decoderConfig(nil)}); err != nil {
		return nil, fmt.Errorf("config: decode: %w", err)
	}
	applyDefaults(&cfg)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// loadYAML checks one YAML layer's keys and types and merges it into k.
func loadYAML(k *koanf.Koanf, source string, data []byte) error {
	m, err := yaml.Parser().Unmarshal(data)
	if err != nil {
		return fmt.Errorf("config: %s: %w", source, err)
	}
	m = normalize(m).(map[string]any)
	if err := schema.check("", m); err != nil {
		return fmt.Errorf("config: %s: %w", source, err)
	}
	if err := k.Load(confmap.Provider(dropNils(m), ""), nil); err != nil {
		return fmt.Errorf("config: %s: %w", source, err)
	}
	return nil
}

// EnvKey maps an environment variable name to a config key: the KILN_
// prefix dropped, lower case, "__" to ".". KILN_QUEUE__MAX_ATTEMPTS is
// queue.max_attempts. ok is false for a name without the prefix.
func EnvKey(name string) (key string, ok bool) {
	rest, ok := strings.CutPrefix(name, EnvPrefix)
	if !ok {
		return "", false
	}
	return strings.ReplaceAll(strings.ToLower(rest), "__", "."), true
}

// loadEnv merges the KILN_ variables of opts.Env into k.
func loadEnv(k *koanf.Koanf, opts LoadOptions) error {
	ignore := make(map[string]bool, len(opts.IgnoreEnv))
	for _, n := range opts.IgnoreEnv {
		ignore[n] = true
	}
	var errs []error
	p := env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return opts.Env },
		TransformFunc: func(name, raw string) (string, any) {
			if reservedEnv[name] || ignore[name] {
				return "", nil
			}
			key, _ := EnvKey(name)
			v, err := parseValue(key, raw)
			if err != nil {
				if hint := envHint(name); hint != "" {
					err = fmt.Errorf("%w (did you mean %s?)", err, hint)
				}
				errs = append(errs, fmt.Errorf("config: env %s: %w", name, err))
				return "", nil
			}
			return key, v
		},
	})
	m, err := p.Read()
	if err != nil {
		return fmt.Errorf("config: env: %w", err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return loadMap(k, "env", m)
}

// envHint suggests the variable an operator probably meant when they wrote
// "_" for "__" (KILN_LOG_LEVEL for KILN_LOG__LEVEL).
func envHint(name string) string {
	rest := strings.TrimPrefix(name, EnvPrefix)
	for i := range len(rest) {
		if rest[i] != '_' {
			continue
		}
		cand := EnvPrefix + rest[:i] + "_" + rest[i:]
		if key, _ := EnvKey(cand); key != "" {
			if n, err := lookup(key); err == nil && n != nil {
				return cand
			}
		}
	}
	return ""
}

// loadSets merges "key=value" overrides into k, in order.
func loadSets(k *koanf.Koanf, sets []string) error {
	for _, s := range sets {
		key, raw, ok := strings.Cut(s, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return fmt.Errorf("config: --set %q: want key=value", s)
		}
		v, err := parseValue(key, raw)
		if err != nil {
			return fmt.Errorf("config: --set %s: %w", s, err)
		}
		if err := loadMap(k, "--set "+key, map[string]any{key: v}); err != nil {
			return err
		}
	}
	return nil
}

func loadMap(k *koanf.Koanf, source string, flat map[string]any) error {
	m := dropNils(unflatten(flat))
	if err := k.Load(confmap.Provider(m, ""), nil); err != nil {
		return fmt.Errorf("config: %s: %w", source, err)
	}
	return nil
}

// unflatten turns {"a.b": 1} into {"a": {"b": 1}}. Unlike koanf's
// maps.Unflatten it leaves maps that are already nested alone.
func unflatten(flat map[string]any) map[string]any {
	out := map[string]any{}
	for key, v := range flat {
		parts := strings.Split(key, ".")
		m := out
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v
	}
	return out
}

// parseValue turns the text of an env variable or --set flag for key into
// a value: verbatim for a string key, a YAML value otherwise. It fails for
// an unknown key or a value of the wrong type.
func parseValue(key, raw string) (any, error) {
	n, err := lookup(key)
	if err != nil {
		return nil, err
	}
	if n.kind == leafKind && n.typ.Kind() == reflect.String {
		return raw, nil
	}
	var v any
	if err := yamlv3.Unmarshal([]byte(raw), &v); err != nil {
		return nil, fmt.Errorf("%s: cannot parse %q as %s: %w", key, raw, typeName(n.typ), err)
	}
	if v == nil {
		return nil, fmt.Errorf("%s: cannot parse %q as %s", key, raw, typeName(n.typ))
	}
	v = normalize(v)
	if err := n.check(key, v); err != nil {
		return nil, err
	}
	return v, nil
}

// applyDefaults replaces each section with its WithDefaults() copy, for
// sections that have such a method, so that zero fields take the owning
// package's defaults.
func applyDefaults(c *Config) {
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() {
			continue
		}
		m := f.MethodByName("WithDefaults")
		if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 || m.Type().Out(0) != f.Type() {
			continue
		}
		f.Set(m.Call(nil)[0])
	}
}
