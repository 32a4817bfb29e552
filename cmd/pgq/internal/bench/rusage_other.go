//go:build !unix

package bench

import "time"

// clientCPU is not measured on this system.
func clientCPU() time.Duration { return 0 }

// peakRSS is not measured on this system.
func peakRSS() int64 { return 0 }
