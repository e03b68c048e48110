// Package distlocktest starts real redis-server processes and a
// fault-injecting TCP proxy, for tests of code that uses distlock (and for
// distlock's own tests and demo).
//
// Each Server is a redis-server on a free 127.0.0.1 port, in its own
// temporary directory, without persistence. Servers can be killed, paused
// with SIGSTOP, resumed and restarted, to inject master failures. A Proxy sits
// between a client and a server and adds latency, blackholes traffic, drops
// replies (the command runs, its answer never arrives) or resets connections,
// and can be pointed at another server (a failover). A replica can be
// started and promoted. A Cluster is a real Redis Cluster of k servers,
// with helpers to find a key's node, migrate a slot (whole, or held half
// way for ASK) and kill a node.
//
// redis-server is found through $DISTLOCK_REDIS_SERVER or $PATH. When it is
// missing, NewServer fails the test with a message that says how to install
// it, unless $DISTLOCK_SKIP_REDIS is set (to anything but "" or "0"): then
// it skips the test.
package distlocktest
