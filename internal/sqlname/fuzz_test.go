package sqlname

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// lexIdents reads s as SQL identifiers separated by dots, as PostgreSQL's
// lexer does: plain ones (folded, so lower-case only here) or double-quoted
// with "" for a quote. ok is false when anything else is left over.
func lexIdents(s string) (idents []string, ok bool) {
	for {
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for {
				j := strings.IndexByte(s[i:], '"')
				if j < 0 {
					return nil, false
				}
				b.WriteString(s[i : i+j])
				i += j + 1
				if strings.HasPrefix(s[i:], `"`) {
					b.WriteByte('"')
					i++
					continue
				}
				break
			}
			idents = append(idents, b.String())
			s = s[i:]
		} else {
			i := 0
			for i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] == '_' || i > 0 && s[i] >= '0' && s[i] <= '9') {
				i++
			}
			if i == 0 || keywords[s[:i]] {
				return nil, false
			}
			idents = append(idents, s[:i])
			s = s[i:]
		}
		if s == "" {
			return idents, true
		}
		if s[0] != '.' {
			return nil, false
		}
		s = s[1:]
	}
}

// FuzzQuoteIdent: whatever the string, QuoteIdent makes it exactly one
// identifier that reads back as the string; nothing escapes the quotes.
func FuzzQuoteIdent(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" || strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
			return // PostgreSQL has no such identifiers
		}
		q := QuoteIdent(s)
		got, ok := lexIdents(q)
		if !ok || len(got) != 1 || got[0] != s {
			t.Fatalf("QuoteIdent(%q) = %s, which reads as %q (ok %v)", s, q, got, ok)
		}
	})
}

// FuzzNames: a prefix and schema either are refused or give names that
// are plain identifiers, written into the DDL and queries as they are,
// none longer than PostgreSQL keeps.
func FuzzNames(f *testing.F) {
	bases := []string{JobTable, LogTable, StatisticsTable, SchedulesTable, StatusType, Function, Trigger,
		Channel, VersionTable, "pgqueuer_statistics_unique_count"}
	f.Fuzz(func(t *testing.T, prefix, schema string) {
		perr, serr := CheckPrefix(prefix), CheckSchema(schema)
		if perr != nil && !strings.Contains(perr.Error(), "prefix") {
			t.Fatalf("CheckPrefix(%q): the error does not say what is wrong: %v", prefix, perr)
		}
		if serr != nil && !strings.Contains(serr.Error(), "schema") {
			t.Fatalf("CheckSchema(%q): the error does not say what is wrong: %v", schema, serr)
		}
		if perr != nil || serr != nil {
			return
		}
		n := Names{Prefix: prefix, Schema: schema}
		for _, base := range bases {
			name := n.Name(base)
			if !plainIdent(name) || len(name) > MaxIdentLen {
				t.Fatalf("prefix %q: object name %q is not a plain identifier of at most %d bytes", prefix, name, MaxIdentLen)
			}
			want := []string{name}
			if schema != "" {
				want = []string{schema, name}
			}
			if got, ok := lexIdents(n.Qualified(base)); !ok || strings.Join(got, ".") != strings.Join(want, ".") {
				t.Fatalf("Names%+v.Qualified(%q) = %s, reads as %q", n, base, n.Qualified(base), got)
			}
		}
		ddl := "CREATE TABLE pgqueuer (id int); SELECT pg_notify('ch_pgqueuer', 'x');"
		if got, want := n.DDL(ddl), strings.ReplaceAll(strings.ReplaceAll(ddl, "pgqueuer ", prefix+"pgqueuer "), "'ch_", "'"+prefix+"ch_"); got != want {
			t.Fatalf("Names%+v.DDL = %s, want %s", n, got, want)
		}
	})
}
