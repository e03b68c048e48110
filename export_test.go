package distlock

import "time"

// Test hooks, compiled only into this package's tests.

// SetRenewHook sets a function that the Client's watchdog calls each time it
// arms its timer: with the time it is armed for and the number of extension
// rounds in flight. Mock-clock tests wait for it before they move the clock.
func SetRenewHook(c *Client, f func(at time.Time, inflight int)) {
	c.renewer.mu.Lock()
	defer c.renewer.mu.Unlock()
	c.renewer.armed = f
}

// RenewalRounds returns how many extension rounds the watchdog started for l.
func RenewalRounds(l *Lease) int64 {
	r := l.mutex.client.renewer
	r.mu.Lock()
	defer r.mu.Unlock()
	return l.w.rounds
}

// KeyOf returns the key or channel of the given kind ("fence", "value",
// "leader", "release") that the library derives for the lock name.
func KeyOf(kind, name string) string { return derivedKey(kind, name) }

// KeySlot returns key's Redis Cluster slot (checked against CLUSTER KEYSLOT
// by TestKeySlot).
func KeySlot(key string) int { return keySlot(key) }

// NotifierSize returns how many locks c's notifier keeps state for.
func NotifierSize(c *Client) int { return c.notifier.size() }

// SetMaxQueuedEvents sets how many events may wait for the observer, and
// returns a function that restores the default.
func SetMaxQueuedEvents(n int) (restore func()) {
	old := maxQueuedEvents
	maxQueuedEvents = n
	return func() { maxQueuedEvents = old }
}
