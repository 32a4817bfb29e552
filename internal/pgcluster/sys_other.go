//go:build !unix

package pgcluster

import (
	"context"
	"errors"
	"io"
	"runtime"
	"syscall"
)

type osUser struct {
	name     string
	uid, gid int
}

func supported() error {
	return errors.New("pgcluster: not supported on " + runtime.GOOS + "; set PGQ_TEST_DSN to an existing server instead")
}

func serverUser(context.Context, io.Writer) (*osUser, error) { return nil, supported() }

func sysProcAttr(*osUser, bool) *syscall.SysProcAttr { return nil }

func killProcess(int) error { return supported() }

func processAlive(int) bool { return false }

type watchdog struct{}

func (c *Cluster) startWatchdog() error { return supported() }

func (*watchdog) stop() {}
