package configs

import _ "embed"

// Default is the text of kiln.yaml, the built-in default configuration.
//
//go:embed kiln.yaml
var Default []byte
