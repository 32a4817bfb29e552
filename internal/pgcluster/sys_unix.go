//go:build unix

package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// osUser is the OS user the server programs run as when the caller is root.
type osUser struct {
	name     string
	uid, gid int
}

func supported() error { return nil }

// serverUser returns nil when the process is not root. As root it returns
// the OS user postgres, creating it with useradd if it does not exist.
func serverUser(ctx context.Context, log io.Writer) (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	const name = "postgres"
	u, err := user.Lookup(name)
	if err != nil {
		if !errors.As(err, new(user.UnknownUserError)) {
			return nil, fmt.Errorf("pgcluster: look up OS user %s: %w", name, err)
		}
		useradd, lerr := exec.LookPath("useradd")
		if lerr != nil {
			return nil, fmt.Errorf("pgcluster: running as root needs an OS user %q to run the server as (initdb refuses root), and useradd was not found to create it", name)
		}
		fmt.Fprintf(log, "pgcluster: creating OS user %s\n", name)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, rerr := exec.CommandContext(cctx, useradd, "--system", "--no-create-home", name).CombinedOutput()
		cancel()
		// useradd fails if a concurrent process created the user: look
		// again before reporting its error.
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("pgcluster: useradd --system --no-create-home %s: %v: %s", name, rerr, strings.TrimSpace(string(out)))
		}
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgcluster: OS user %s has non-numeric uid %q or gid %q", name, u.Uid, u.Gid)
	}
	return &osUser{name: name, uid: uid, gid: gid}, nil
}

// sysProcAttr makes a command run as owner (when not nil), optionally in a
// process group of its own so that terminal signals do not reach it.
func sysProcAttr(owner *osUser, ownGroup bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: ownGroup}
	if owner != nil {
		attr.Credential = &syscall.Credential{Uid: uint32(owner.uid), Gid: uint32(owner.gid), Groups: []uint32{}}
	}
	return attr
}

func killProcess(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// watchdog is a shell process that stops the server and removes the
// cluster's directories when the pipe from this process is closed, which
// happens when this process exits for any reason, including SIGKILL or a
// panic on a test timeout. Stop kills it before doing the same work itself.
type watchdog struct {
	cmd *exec.Cmd
	w   *os.File
}

// watchdogScript: $0 = pg_ctl, $1 = data dir, $2 = root dir, $3 = socket
// dir. The loop catches a server that a start in flight brings up just after
// the first stop.
const watchdogScript = `trap '' INT TERM HUP
read _
i=0
while [ $i -lt 5 ]; do
	"$0" stop -D "$1" -m immediate -w -t 20 >/dev/null 2>&1
	sleep 1
	[ -f "$1/postmaster.pid" ] || break
	i=$((i+1))
done
rm -rf "$2"
[ "$3" = "$2" ] || rm -rf "$3"`

func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pgcluster: watchdog pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, c.bin.pgctl, c.dataDir, c.root, c.sockDir)
	cmd.Stdin = r // an *os.File: no copying goroutine
	cmd.Dir = "/"
	cmd.Env = serverEnv()
	cmd.SysProcAttr = sysProcAttr(c.owner, true)
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("pgcluster: start watchdog: %w", err)
	}
	c.watchdog = &watchdog{cmd: cmd, w: w}
	return nil
}

// stop kills the watchdog without letting it act. It is nil-safe.
func (wd *watchdog) stop() {
	if wd == nil || wd.cmd == nil {
		return
	}
	_ = wd.cmd.Process.Kill()
	_ = wd.cmd.Wait()
	_ = wd.w.Close()
	wd.cmd = nil
}
