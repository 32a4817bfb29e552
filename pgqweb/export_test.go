package pgqweb

import "net/http"

// LiveReads returns how many times the dashboard h read a live part of a
// page from the database.
func LiveReads(h http.Handler) int64 { return h.(*server).views.reads.Load() }
