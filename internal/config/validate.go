package config

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
)

// Validator is implemented by config sections that check themselves.
// Config.Validate finds it by type assertion on each section (value or
// pointer receiver). Errors name the full config key, e.g.
// "queue.max_attempts: must be ≥ 1, got 0"; several problems may be
// returned with errors.Join.
type Validator interface {
	Validate() error
}

// ValidationError lists every problem Config.Validate found.
type ValidationError struct {
	Problems []error
}

// Error implements error, one problem per line, each "config: <key>: ...".
func (e *ValidationError) Error() string {
	var lines []string
	for _, p := range e.Problems {
		for l := range strings.SplitSeq(p.Error(), "\n") {
			lines = append(lines, "config: "+l)
		}
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, for errors.Is and errors.As.
func (e *ValidationError) Unwrap() []error { return e.Problems }

// Validate checks the top-level keys and calls each section's Validate.
// It returns a *ValidationError or nil.
func (c *Config) Validate() error {
	var errs []error
	if err := validateListen(c.Listen); err != nil {
		errs = append(errs, err)
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: must not be empty"))
	}
	if c.ModelsDir == "" {
		errs = append(errs, errors.New("models_dir: must not be empty"))
	}
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		f := v.Field(i)
		var val Validator
		if x, ok := f.Interface().(Validator); ok {
			val = x
		} else if x, ok := f.Addr().Interface().(Validator); ok {
			val = x
		}
		if val == nil {
			continue
		}
		if err := val.Validate(); err != nil {
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = append(errs, j.Unwrap()...)
			} else {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Problems: errs}
}

func validateListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen: %q is not host:port: %w", addr, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("listen: %q: port %q is not a number in 0-65535", addr, port)
	} else if p == 0 && host == "" {
		return nil // ":0", a free port on every interface (tests)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("listen: %q: bad host %q", addr, host)
	}
	return nil
}
