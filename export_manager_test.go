package pgq

import "time"

// SetHealthCheck shortens the listener health check for a test and returns
// a function that restores it.
func SetHealthCheck(interval, timeout time.Duration) (restore func()) {
	i, t := healthInterval, healthTimeout
	healthInterval, healthTimeout = interval, timeout
	return func() { healthInterval, healthTimeout = i, t }
}

// SetUpkeepInterval shortens how often workers check the job table's
// statistics and dead rows, and returns a function that restores it.
func SetUpkeepInterval(d time.Duration) (restore func()) {
	old := upkeepInterval
	upkeepInterval = d
	return func() { upkeepInterval = old }
}
