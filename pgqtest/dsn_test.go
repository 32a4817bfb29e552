package pgqtest

import "testing"

func TestWithDBName(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"host=/tmp/x port=5432 user=postgres dbname=postgres sslmode=disable",
			"host=/tmp/x port=5432 user=postgres dbname=pgqt_1 sslmode=disable"},
		{"host=localhost", "host=localhost dbname=pgqt_1"},
		{"  host = 'a b'   password='it\\'s' dbname = x ", `host='a b' password='it\'s' dbname=pgqt_1`},
		{`host=a\ b`, `host='a b' dbname=pgqt_1`},
		{"postgres://u:p@localhost:5432/postgres?sslmode=disable",
			"postgres://u:p@localhost:5432/pgqt_1?sslmode=disable"},
		{"postgresql://localhost", "postgresql://localhost/pgqt_1"},
		{"postgres:///postgres?host=/tmp/s&dbname=x", "postgres:///pgqt_1?host=%2Ftmp%2Fs"},
	} {
		got, err := withDBName(tc.dsn, "pgqt_1")
		if err != nil {
			t.Errorf("withDBName(%q): %v", tc.dsn, err)
			continue
		}
		if got != tc.want {
			t.Errorf("withDBName(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
	for _, bad := range []string{"host", "host='x", "=x"} {
		if got, err := withDBName(bad, "d"); err == nil {
			t.Errorf("withDBName(%q) = %q, want an error", bad, got)
		}
	}
}
