// Package logging builds kiln's zerolog loggers.
//
// The daemon makes one root logger from the log section of its config and
// hands each component a child tagged with its name, so that every line says
// where it came from. Output is human-readable on a terminal and JSON
// otherwise (format auto), or forced with format console or json.
//
//	root, err := logging.New(cfg.Log, os.Stderr)
//	if err != nil { ... }
//	log := logging.Component(root, "tier") // {"component":"tier",...}
//	log.Info().Str("model", id).Msg("promoted")
package logging
