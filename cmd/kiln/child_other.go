//go:build !linux

package main

import "syscall"

// childAttr is the default elsewhere: the demo stops its children on its
// way out (Ctrl-C), but a demo killed outright leaves them running.
func childAttr() *syscall.SysProcAttr { return nil }
