// Package config loads kiln's configuration.
//
// Four layers, each overriding the one before key by key:
//
//  1. the embedded default, configs/kiln.yaml (every key, commented);
//  2. a YAML file (--config FILE);
//  3. the environment: KILN_ + the key path in upper case, with "__"
//     between levels (KILN_LOG__LEVEL=debug, KILN_QUEUE__MAX_ATTEMPTS=5,
//     KILN_DATA_DIR=/var/lib/kiln); a single "_" stays part of the key name
//     because keys contain "_";
//  4. --set key=value flags with the dotted path (--set log.level=debug).
//
// Environment and --set values are YAML scalars, so numbers, true/false,
// durations ("2s") and flow lists ("[a, b]") work; a string key takes the
// value verbatim. A list of sections (devices.simulated) is set whole as a
// YAML flow list.
//
// Unknown keys are errors in every layer, naming the key and the keys
// allowed at that level, and so are values of the wrong type. The allowed
// keys come from the koanf tags of Config by reflection, so a section that
// gains a field needs no change here. After the layers are merged, each
// section's WithDefaults (where it has one) fills zero fields and each
// section's Validate (where it has one) checks it.
//
//	cfg, err := config.Load(config.LoadOptions{File: path, Env: os.Environ(), Sets: sets})
//	if err != nil { ... } // "config: unknown key "queue.max_attemps" (allowed under queue: ...)"
//	out, _ := cfg.YAML() // kiln config print
package config
