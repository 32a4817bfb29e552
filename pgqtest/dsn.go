package pgqtest

import (
	"net/url"

	"github.com/pgq-dev/pgq/internal/dsn"
)

// withDBName returns dsn, a libpq key=value or URL connection string, with
// its database name replaced by dbname.
func withDBName(connString, dbname string) (string, error) {
	if dsn.IsURL(connString) {
		u, err := url.Parse(connString)
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

	pairs, err := dsn.ParseKeywordValue(connString)
	if err != nil {
		return "", err
	}
	found := false
	for i := range pairs {
		if pairs[i].Key == "dbname" {
			pairs[i].Value = dbname
			found = true
		}
	}
	if !found {
		pairs = append(pairs, dsn.Pair{Key: "dbname", Value: dbname})
	}
	return dsn.Join(pairs), nil
}
