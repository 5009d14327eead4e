//go:build !linux

package plugin

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; Managed clients are
// still killed on an orderly exit.
func sysProcAttr() *syscall.SysProcAttr { return nil }
