// Command withpg runs a command with PGQ_TEST_DSN set to the DSN of a
// private, throwaway PostgreSQL server:
//
//	go run ./internal/cmd/withpg [-v] -- COMMAND [ARG...]
//
// If PGQ_TEST_DSN is already set, withpg just runs the command. Otherwise
// it starts a server with internal/pgcluster (with fsync, synchronous_commit
// and full_page_writes off), sets PGQ_TEST_DSN to the DSN of its database
// postgres in the command's environment, runs the command with standard
// input, output and error passed through, forwards SIGINT, SIGTERM and
// SIGHUP to it, and stops the server and removes its files afterwards,
// whether the command succeeded, failed or was interrupted. It exits with
// the command's exit code (128+N when the command died of signal N).
//
// For example, `make test` runs:
//
//	go run ./internal/cmd/withpg -- go test -race ./...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pgq-dev/pgq/internal/pgcluster"
)

const envDSN = "PGQ_TEST_DSN"

func main() {
	os.Exit(run())
}

func run() int {
	verbose := flag.Bool("v", false, "print the server's progress lines")
	bouncer := flag.Bool("pgbouncer", false, "make sure PgBouncer is installed (with apt-get, as root, when missing) for the tests that start one")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: withpg [-v] [-pgbouncer] -- COMMAND [ARG...]\n\n"+
			"Runs COMMAND with %s set to a private PostgreSQL server's DSN,\n"+
			"starting the server first unless %s is already set.\n\n", envDSN, envDSN)
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		flag.Usage()
		return 2
	}

	path, err := exec.LookPath(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 127
	}

	// Catch the signals from here on: withpg must outlive them to stop the
	// server.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	if *bouncer {
		findPgBouncer(*verbose)
	}
	env := os.Environ()
	if os.Getenv(envDSN) == "" {
		c, code := startCluster(*verbose, sigs)
		if c == nil {
			return code
		}
		defer func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
			}
		}()
		fmt.Fprintf(os.Stderr, "withpg: PostgreSQL listening on port %d (socket dir and data in %s)\n",
			c.Port(), filepath.Dir(c.DataDir()))
		env = append(env, envDSN+"="+c.DSN("postgres"))
	}
	return runCommand(path, args, env, sigs)
}

// findPgBouncer finds or installs PgBouncer now, before the tests run, so
// that no test installs it while others measure time; when it cannot, it
// says so: the tests that need it skip.
func findPgBouncer(verbose bool) {
	var log io.Writer
	if verbose {
		log = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if _, err := pgcluster.FindPgBouncer(ctx, log); err != nil {
		fmt.Fprintf(os.Stderr, "withpg: the PgBouncer tests will skip: %v\n", err)
	}
}

// startCluster starts the server; a signal cancels the start. On failure it
// returns a nil Cluster and the exit code.
func startCluster(verbose bool, sigs <-chan os.Signal) (*pgcluster.Cluster, int) {
	var log io.Writer
	if verbose {
		log = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	interrupted := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			interrupted <- s
			cancel()
		case <-done:
		}
	}()
	c, err := pgcluster.Start(ctx, pgcluster.Options{
		Settings: map[string]string{
			"fsync":              "off",
			"synchronous_commit": "off",
			"full_page_writes":   "off",
		},
		Log:     log,
		Install: true, // withpg is what `make test` uses to set a fresh machine up
	})
	close(done)
	select {
	case s := <-interrupted:
		if c != nil {
			_ = c.Stop()
		}
		fmt.Fprintf(os.Stderr, "withpg: interrupted by %v while starting PostgreSQL\n", s)
		return nil, 128 + signalNumber(s)
	default:
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return nil, 1
	}
	return c, 0
}

// runCommand runs the program at path with args (args[0] is its name as
// given) and env, forwarding signals, and returns its exit code.
func runCommand(path string, args, env []string, sigs <-chan os.Signal) int {
	cmd := &exec.Cmd{Path: path, Args: args}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 126
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case err := <-waited:
			return exitCode(err)
		}
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 1
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

func signalNumber(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 1
}
