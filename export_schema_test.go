package pgq

import "slices"

// RequiredIndexes returns the indexes Verify requires, by base name.
func RequiredIndexes() []string { return slices.Clone(requiredIndexes) }
