package cli_test

import (
	"strings"
	"testing"
)

// TestConnectionErrorsHideThePassword runs every command that connects
// against connection strings that cannot work (nothing listens on port 1,
// or the string does not parse) and checks that no message shows the
// password, on both drivers and from --dsn, $PGQ_DSN and --pg-password.
func TestConnectionErrorsHideThePassword(t *testing.T) {
	const pw = "Sekr3tPw"
	commands := [][]string{
		{"install"}, {"upgrade"}, {"uninstall"}, {"verify"}, {"queue", "x"},
		{"failed"}, {"requeue", "1"}, {"cancel", "1"}, {"pause", "x"}, {"resume", "x"}, {"schedules"},
		{"dashboard", "--once"}, {"listen"}, {"demo", "--jobs", "1"}, {"bench", "drain", "--jobs", "1"},
		{"chaos", "--duration", "1s"}, {"web", "--addr", "127.0.0.1:0"}, {"pause", "x"}, {"resume", "x"},
	}
	// Each command that takes --dsn must be in the list.
	listed := map[string]bool{}
	for _, c := range commands {
		listed[c[0]] = true
	}
	for _, line := range strings.Split(pgq(t, "help").stdout, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(line, "  ") {
			continue
		}
		h := pgq(t, f[0], "-h")
		if strings.Contains(h.stdout+h.stderr, "-dsn") && !listed[f[0]] {
			t.Errorf("pgq %s takes --dsn but is not tested here", f[0])
		}
	}
	dsns := []string{
		"postgres://u:" + pw + "@127.0.0.1:1/db?connect_timeout=5",
		"postgresql://u:" + pw + "@127.0.0.1:notaport/db",
		"postgres://u:" + pw + " x@127.0.0.1:1/db",
		"postgres://u@127.0.0.1:1/db?password=" + pw,
		"host=127.0.0.1 port=1 user=u password=" + pw,
		"host=127.0.0.1 port=notaport user=u password = " + pw,
		`host=127.0.0.1 port=notaport user=u password='` + pw + ` \' x'`,
		"host=127.0.0.1 port=1 password=" + pw + " garbage",
	}
	check := func(t *testing.T, r result) {
		t.Helper()
		if r.code != 1 {
			t.Errorf("pgq %q: exit %d, want 1 (a connection error): %s", r.args, r.code, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, pw) {
			t.Errorf("pgq %q printed the password:\nstdout:\n%s\nstderr:\n%s", r.args, r.stdout, r.stderr)
		}
	}
	for _, driver := range []string{"pgx", "postgres"} {
		for _, c := range commands {
			t.Run(driver+"/"+c[0], func(t *testing.T) {
				for _, d := range dsns {
					check(t, pgq(t, append(append([]string{}, c...), "--driver", driver, "--dsn", d)...))
				}
				t.Setenv("PGQ_DSN", dsns[4])
				check(t, pgq(t, append(append([]string{}, c...), "--driver", driver)...))
				t.Setenv("PGQ_DSN", "")
				if c[0] != "bench" && c[0] != "demo" {
					check(t, pgq(t, append(append([]string{}, c...), "--driver", driver,
						"--pg-host", "127.0.0.1", "--pg-port", "1", "--pg-password", pw+" x")...))
				}
			})
		}
	}
}
