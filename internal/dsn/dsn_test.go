package dsn

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
)

// FuzzParseKeywordValue: no input panics, and what parses is written back
// (Join) as a string that parses to the same pairs.
func FuzzParseKeywordValue(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		pairs, err := ParseKeywordValue(s)
		if err != nil {
			return
		}
		back := Join(pairs)
		again, err := ParseKeywordValue(back)
		if err != nil {
			t.Fatalf("Join(%q) = %q does not parse: %v", pairs, back, err)
		}
		if len(pairs) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(pairs, again) {
			t.Fatalf("%q parses to %q; written back as %q it parses to %q", s, pairs, back, again)
		}
	})
}

// FuzzRedact puts a password in connection strings that fail (unparsable
// port, space in a URL's user info…), takes the error each driver gives
// for them, and checks that Redact removes the password from it.
func FuzzRedact(f *testing.F) {
	f.Fuzz(func(t *testing.T, secret string) {
		if strings.ContainsRune(secret, 0) || !utf8.ValidString(secret) {
			return
		}
		pw := "Zq7" + secret + "7qZ"
		u := url.URL{Scheme: "postgres", User: url.UserPassword("u", pw), Host: "127.0.0.1:1", Path: "/db"}
		dsns := []string{
			"host=127.0.0.1 port=notaport password=" + Quote(pw),
			"host=127.0.0.1 port=notaport password = " + Quote(pw),
			"password=" + Quote(pw) + " port=x",
			u.String() + "?port=x&sslmode=nonsense",
			"postgres://u:" + pw + "@127.0.0.1:notaport/db",
			"postgres://u@127.0.0.1:1/db?sslmode=bad&password=" + url.QueryEscape(pw),
		}
		for _, d := range dsns {
			var msgs []string
			if _, err := pgconn.ParseConfig(d); err != nil {
				msgs = append(msgs, err.Error())
			}
			if IsURL(d) {
				if _, err := pq.ParseURL(d); err != nil {
					msgs = append(msgs, err.Error())
				}
				if _, err := url.Parse(d); err != nil {
					msgs = append(msgs, err.Error())
				}
			} else if _, err := pq.NewConnector(d); err != nil {
				msgs = append(msgs, err.Error())
			}
			for _, m := range msgs {
				if red := Redact(m, d); strings.Contains(red, pw) {
					t.Fatalf("DSN %q: the error %q keeps the password after Redact: %q", d, m, red)
				}
			}
		}
	})
}

func TestRedactKeepsShortWords(t *testing.T) {
	got := Redact("cannot parse `host=x password=ab`: abc ab", "host=x password=ab")
	if want := "cannot parse `host=x password=xxxxx`: abc xxxxx"; got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
}
