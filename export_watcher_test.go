package pgq

// WatcherPending exposes how many ids a CompletionWatcher still waits for
// and for how many waits, so that tests can check that ended waits leave
// nothing behind.
func WatcherPending(w *CompletionWatcher) (ids, waits int) { return w.pending() }
