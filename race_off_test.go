//go:build !race

package distlock_test

// raceEnabled: the race detector is on (it allocates more).
const raceEnabled = false
