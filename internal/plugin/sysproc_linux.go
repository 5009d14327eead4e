package plugin

import "syscall"

// sysProcAttr makes the kernel SIGKILL the plugin when kiln dies, even by
// kill -9. Pdeathsig fires when the thread that forked exits; Go does not
// retire the threads it forks from except LockOSThread ones, which the
// plugin host never uses.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
