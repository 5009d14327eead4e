// Package configs holds kiln's embedded default configuration.
//
// Default is the text of kiln.yaml, the lowest layer of kiln's configuration
// (see internal/config): every key with its default and a comment that says
// what it does.
//
//	cfg, err := config.Load(config.LoadOptions{}) // starts from configs.Default
package configs
