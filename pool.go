package distlock

import (
	"context"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Pool is the one method distlock needs from a connection pool. A redigo
// *redis.Pool satisfies it. Connections are taken with the context, so a
// dial to a dead master is bounded.
type Pool interface {
	GetContext(ctx context.Context) (redis.Conn, error)
}

// maxIdle is the number of idle connections NewClient's pools keep per
// master: the pipelined lock connection, the subscriber connection and the
// health probe each take one at a time.
const maxIdle = 4

// newPool returns the redigo pool of one master for NewClient. It has no
// cap on active connections: a Client takes a few long-lived ones per
// master (lock traffic, subscriptions, probes), and a cap would let one of
// them starve the others.
func newPool(a masterAddr, cfg *clientConfig) *redis.Pool {
	opts := append([]redis.DialOption{
		redis.DialConnectTimeout(cfg.dialTimeout),
		redis.DialReadTimeout(cfg.masterTimeout),
		redis.DialWriteTimeout(cfg.masterTimeout),
	}, a.opts...)
	network, address := a.network, a.address
	return &redis.Pool{
		MaxIdle:     maxIdle,
		IdleTimeout: 5 * time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, network, address, opts...)
		},
	}
}
