package pgq

import (
	"fmt"
	"maps"
	"sync"
)

// registry holds what a QueueManager or SchedulerManager runs (entrypoints,
// schedules) and guards their one-Run-at-a-time lifecycle: registering is
// refused while Run runs, and Run works on a copy.
type registry[K comparable, V any] struct {
	mu      sync.Mutex
	items   map[K]V
	running bool
}

// add registers v under k; what names it in errors.
func (r *registry[K, V]) add(k K, v V, what string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return fmt.Errorf("pgq: %s: cannot register while Run is running", what)
	}
	if _, dup := r.items[k]; dup {
		return fmt.Errorf("pgq: %s is already registered", what)
	}
	if r.items == nil {
		r.items = map[K]V{}
	}
	r.items[k] = v
	return nil
}

// begin marks Run as running and returns a copy of the registered items and
// the function that ends the run. owner and hint name the type and the
// registering method in errors.
func (r *registry[K, V]) begin(owner, noun, hint string) (map[K]V, func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return nil, nil, fmt.Errorf("pgq: Run is already running on this %s", owner)
	}
	if len(r.items) == 0 {
		return nil, nil, fmt.Errorf("pgq: no %s registered; call %s before Run", noun, hint)
	}
	r.running = true
	end := func() {
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
	}
	return maps.Clone(r.items), end, nil
}
