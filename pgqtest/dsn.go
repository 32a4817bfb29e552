package pgqtest

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// withDBName returns dsn, a libpq key=value or URL connection string, with
// its database name replaced by dbname.
func withDBName(dsn, dbname string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		u.Path = "/" + dbname
		u.RawPath = ""
		if q := u.Query(); q.Has("dbname") {
			q.Del("dbname")
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}

	pairs, err := parseKeywordValue(dsn)
	if err != nil {
		return "", err
	}
	found := false
	for i := range pairs {
		if pairs[i].key == "dbname" {
			pairs[i].value = dbname
			found = true
		}
	}
	if !found {
		pairs = append(pairs, keyValue{"dbname", dbname})
	}
	words := make([]string, len(pairs))
	for i, p := range pairs {
		words[i] = p.key + "=" + quoteValue(p.value)
	}
	return strings.Join(words, " "), nil
}

type keyValue struct{ key, value string }

// parseKeywordValue parses a libpq keyword/value connection string:
// key = value pairs separated by white space, where a value may be
// single-quoted and backslash escapes a quote or backslash.
func parseKeywordValue(s string) ([]keyValue, error) {
	var pairs []keyValue
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' }
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
		pairs = append(pairs, keyValue{key, v.String()})
	}
}

// quoteValue quotes a value for a keyword/value connection string.
func quoteValue(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\r\v\f'\\") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
