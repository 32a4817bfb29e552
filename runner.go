package pgq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

// What QueueManager.Run and SchedulerManager.Run share: how they back off
// after a failed statement, retry the writes that must not be lost, turn
// panics of user code into errors, wake their loops, and stop gracefully.

// backoff is the wait of a loop whose database work failed: 50 ms after
// the first failure, doubling up to maxBackoff, back to zero after a
// success. Capped low, so that work resumes within about a second of the
// database's return (a failed claim or schedule read costs one round trip).
type backoff struct{ wait time.Duration }

const maxBackoff = time.Second

// failed returns how long to wait after another failure.
func (b *backoff) failed() time.Duration {
	b.wait = min(max(2*b.wait, 50*time.Millisecond), maxBackoff)
	return b.wait
}

// ok resets the backoff after a success.
func (b *backoff) ok() { b.wait = 0 }

// retryWrite runs write until it succeeds, retrying while the database is
// unreachable, for up to timeout (each try for at most tryTimeout). It
// does not take a caller's ctx: the writes that end work (outcomes, a
// schedule's next run) must happen after Run's ctx has ended too. It
// gives up at once on ErrSchemaMissing; onRetry, when set, hears each
// failure before the wait.
func retryWrite(timeout, tryTimeout time.Duration, write func(ctx context.Context) error,
	onRetry func(err error, wait time.Duration)) error {
	deadline := time.Now().Add(timeout)
	wait := 50 * time.Millisecond
	for {
		tryDeadline := time.Now().Add(tryTimeout)
		if deadline.Before(tryDeadline) {
			tryDeadline = deadline
		}
		ctx, cancel := context.WithDeadline(context.Background(), tryDeadline)
		err := write(ctx)
		cancel()
		if err == nil {
			return nil
		}
		err = interpretError(err)
		if errors.Is(err, ErrSchemaMissing) || !time.Now().Add(wait).Before(deadline) {
			return err
		}
		if onRetry != nil {
			onRetry(err, wait)
		}
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
}

// panicError is a panic of user code (a handler, a schedule's function)
// turned into an error, with the stack where it happened.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// callSafely runs f, turning a panic into a *panicError.
func callSafely(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return f()
}

// signal sends on a one-slot channel without blocking: signals that
// arrive while one is pending fold into it.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// resetTimer stops t, drains it and sets it to fire after d.
func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// graceful is the end of a Run: it waits for n running tasks, each of
// which sends once on done when it ends (onDone, if set, hears which).
// When grace passes first it logs that, calls cancel (which ends the
// tasks' contexts) and waits on. While it waits, tick (if not nil) calls
// onTick: the scheduler heartbeats its running schedules meanwhile.
func graceful[T any](n int, done <-chan T, onDone func(T), grace time.Duration, cancel func(),
	logger *slog.Logger, what string, tick <-chan time.Time, onTick func()) {
	if n <= 0 {
		return
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	for n > 0 {
		select {
		case v := <-done:
			n--
			if onDone != nil {
				onDone(v)
			}
		case <-tick:
			onTick()
		case <-t.C:
			logger.Warn("pgq: shutdown grace period over; canceling "+what, "running", n)
			cancel()
		}
	}
}
