package api

import "github.com/kiln-gpu/kiln/internal/api/apiconfig"

// Config is the api section (apiconfig.Config): the HTTP server's limits.
// The type lives in apiconfig so that internal/config need not import this
// package.
type Config = apiconfig.Config
