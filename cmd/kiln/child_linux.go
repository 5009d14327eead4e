package main

import "syscall"

// childAttr makes a demo child die with its parent, even when the parent
// is killed outright: Ctrl-C or kill -9 of the demo leaves no process.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
