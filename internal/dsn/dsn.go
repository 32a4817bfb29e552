// Package dsn reads and writes PostgreSQL connection strings (libpq's
// keyword/value form and URLs) and keeps their passwords out of messages.
package dsn

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Pair is one keyword = value of a keyword/value connection string.
type Pair struct{ Key, Value string }

// IsURL reports whether s is a connection URL rather than keyword/value.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// ParseKeywordValue parses a libpq keyword/value connection string: key =
// value pairs separated by white space, where a value may be single-quoted
// and a backslash escapes the next character.
func ParseKeywordValue(s string) ([]Pair, error) {
	var pairs []Pair
	i := 0
	skip := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	for {
		skip()
		if i == len(s) {
			return pairs, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		skip()
		if i == len(s) || s[i] != '=' || key == "" {
			return nil, fmt.Errorf("invalid connection string: missing \"=\" after %q", key)
		}
		i++ // '='
		skip()
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					v.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return nil, errors.New("invalid connection string: unterminated quoted value")
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					c = s[i]
					i++
				}
				v.WriteByte(c)
			}
		}
		pairs = append(pairs, Pair{key, v.String()})
	}
}

// Quote quotes a value for a keyword/value connection string, when needed.
func Quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\r\v\f'\\") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// Join writes pairs as a keyword/value connection string.
func Join(pairs []Pair) string {
	words := make([]string, len(pairs))
	for i, p := range pairs {
		words[i] = p.Key + "=" + Quote(p.Value)
	}
	return strings.Join(words, " ")
}

// looseKV finds password values in a keyword/value string that does not
// parse: the value as written, quoted or not.
var looseKV = regexp.MustCompile(`password\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)`)

// secrets returns every spelling of the password in s that a driver might
// print: as written, unquoted, unescaped, percent-decoded.
func secrets(s string) []string {
	var out []string
	add := func(v string) {
		if v != "" {
			out = append(out, v)
		}
	}
	if IsURL(s) {
		rest := s[strings.Index(s, "://")+3:]
		// The user info as written: up to the first @ that comes before
		// the path, and (for a password with an unescaped @, / or ?,
		// which a malformed URL may hold) up to the last @.
		ats := []int{strings.LastIndex(rest, "@")}
		if slash := strings.IndexAny(rest, "/?"); slash >= 0 {
			ats = append(ats, strings.LastIndex(rest[:slash], "@"))
		}
		for _, at := range ats {
			if at < 0 {
				continue
			}
			userinfo := rest[:at]
			if colon := strings.Index(userinfo, ":"); colon >= 0 {
				raw := userinfo[colon+1:]
				add(raw)
				if dec, err := url.PathUnescape(raw); err == nil {
					add(dec)
				}
			}
		}
		if u, err := url.Parse(s); err == nil {
			if pw, ok := u.User.Password(); ok {
				add(pw)
			}
			for _, v := range u.Query()["password"] {
				add(v)
			}
		}
		// A password in the query string, as written.
		for _, m := range regexp.MustCompile(`[?&]password=([^&]*)`).FindAllStringSubmatch(s, -1) {
			add(m[1])
		}
		return out
	}
	if pairs, err := ParseKeywordValue(s); err == nil {
		for _, p := range pairs {
			if p.Key == "password" {
				add(p.Value)
				add(Quote(p.Value))
			}
		}
	}
	for _, m := range looseKV.FindAllStringSubmatch(s, -1) {
		v := m[1]
		add(v)
		add(strings.Trim(v, "'"))
	}
	return out
}

// Redact returns msg with every spelling of the password of the connection
// string dsn replaced by xxxxx. A short password is replaced only where it
// stands alone (not inside a longer word), so that messages stay readable.
func Redact(msg, dsn string) string {
	pws := secrets(dsn)
	// Longest first: a shorter spelling may be part of a longer one.
	sort.Slice(pws, func(i, j int) bool { return len(pws[i]) > len(pws[j]) })
	for _, pw := range pws {
		msg = replaceSecret(msg, pw)
	}
	return msg
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

func replaceSecret(msg, pw string) string {
	const mask = "xxxxx"
	if len(pw) >= 8 {
		return strings.ReplaceAll(msg, pw, mask)
	}
	var b strings.Builder
	for {
		i := strings.Index(msg, pw)
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		end := i + len(pw)
		alone := (i == 0 || !isWordByte(msg[i-1]) || !isWordByte(pw[0])) &&
			(end == len(msg) || !isWordByte(msg[end]) || !isWordByte(pw[len(pw)-1]))
		if alone {
			b.WriteString(msg[:i])
			b.WriteString(mask)
		} else {
			b.WriteString(msg[:end])
		}
		msg = msg[end:]
	}
}

// RedactError wraps err so that its text has the password of dsn removed;
// errors.Is and errors.As still see err.
func RedactError(err error, dsn string) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	if red := Redact(text, dsn); red != text {
		return &redacted{msg: red, err: err}
	}
	return err
}

type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }
