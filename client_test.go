package distlock_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock"
)

func TestNewClientRejectsBadInput(t *testing.T) {
	tests := map[string]struct {
		addrs []string
		opts  []distlock.ClientOption
		want  string // a part of the error that names the field
	}{
		"duplicate master":          {addrs: []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7000"}, want: "masters[2]: duplicate master 127.0.0.1:7000 (same server as masters[0])"},
		"duplicate across db":       {addrs: []string{"redis://127.0.0.1:7000/1", "127.0.0.1:7000"}, want: "masters[1]: duplicate master"},
		"duplicate case":            {addrs: []string{"LocalHost:7000", "localhost:7000"}, want: "masters[1]: duplicate master"},
		"duplicate default port":    {addrs: []string{"redis://10.0.0.1", "10.0.0.1:6379"}, want: "masters[1]: duplicate master"},
		"missing port":              {addrs: []string{"localhost"}, want: `masters[0]: invalid address "localhost"`},
		"bad port":                  {addrs: []string{"localhost:99999"}, want: `port "99999"`},
		"bad scheme":                {addrs: []string{"http://localhost:6379"}, want: `scheme "http": must be redis, rediss or unix`},
		"bad db":                    {addrs: []string{"redis://localhost:6379/x"}, want: `database "x"`},
		"query":                     {addrs: []string{"redis://localhost:6379/0?timeout=1"}, want: `"redis://localhost:6379/0?timeout=1": query "timeout=1" is not accepted: only [user:password@]host[:port][/db]`},
		"query with password":       {addrs: []string{"redis://:hunter2@localhost:6379/0?timeout=1"}, want: `"redis://:xxxxx@localhost:6379/0?timeout=1": query is not accepted`},
		"fragment":                  {addrs: []string{"redis://localhost:6379/0#x"}, want: `"redis://localhost:6379/0#x": fragment "x" is not accepted`},
		"duplicate port spelling":   {addrs: []string{"127.0.0.1:6379", "127.0.0.1:06379"}, want: "masters[1]: duplicate master 127.0.0.1:6379 (same server as masters[0])"},
		"duplicate ipv6 spelling":   {addrs: []string{"[::1]:6379", "redis://[0:0::1]:6379"}, want: "masters[1]: duplicate master [::1]:6379"},
		"duplicate with spaces":     {addrs: []string{"127.0.0.1:6379", " 127.0.0.1:6379 "}, want: "masters[1]: duplicate master"},
		"duplicate unix socket":     {addrs: []string{"unix:///tmp/r.sock", "unix:///tmp//r.sock"}, want: "masters[1]: duplicate master unix:/tmp/r.sock"},
		"inner space":               {addrs: []string{"127.0.0.1: 6379"}, want: `"127.0.0.1: 6379": contains white space`},
		"empty address":             {addrs: []string{"127.0.0.1:6379", "  "}, want: "masters[1]: invalid address: empty"},
		"relative unix path":        {addrs: []string{"unix://redis.sock"}, want: "want unix:///absolute/path"},
		"bad url keeps no password": {addrs: []string{"redis://:hunter2@local host:6379"}, want: `"redis://:xxxxx@local host:6379"`},
		"empty host":                {addrs: []string{":6379"}, want: "host is empty"},
		"negative dial timeout":     {opts: []distlock.ClientOption{distlock.WithDialTimeout(-time.Second)}, want: "WithDialTimeout: must be positive"},
		"zero master timeout":       {opts: []distlock.ClientOption{distlock.WithMasterTimeout(0)}, want: "WithMasterTimeout: must be positive"},
		"nil clock":                 {opts: []distlock.ClientOption{distlock.WithClock(nil)}, want: "WithClock: clock is nil"},
		"password stays out of err": {addrs: []string{"redis://:hunter2@localhost:6379/x"}, want: `"redis://:xxxxx@localhost:6379/x"`},
		"lone password stays out":   {addrs: []string{"redis://hunter2@localhost:6379/x"}, want: `"redis://xxxxx@localhost:6379/x"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := distlock.NewClient(tc.addrs, tc.opts...)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestNewClientAcceptsAddressForms(t *testing.T) {
	c, err := distlock.NewClient([]string{
		"10.0.0.1:6379",
		"redis://10.0.0.2",
		"redis://user:secret@10.0.0.3:6380/2",
		"rediss://10.0.0.4:6380",
		"[::1]:6379",
	}, distlock.WithPassword("secret"))
	require.NoError(t, err)
	defer c.Close()
}

func TestNewClientDefaultsToLocalRedis(t *testing.T) {
	// Construction does not dial, so this works whether or not a Redis
	// listens on 127.0.0.1:6379.
	c, err := distlock.NewClient(nil)
	require.NoError(t, err)
	defer c.Close()
}

func TestNewClientDoesNotDial(t *testing.T) {
	// Nothing listens on port 1; the client is still built, and the first
	// round reports the refusal on that master.
	c := newClient(t, []string{"127.0.0.1:1"})
	m := newMutex(t, c, lockName(t))
	_, err := m.TryLock(context.Background())
	var qe *distlock.QuorumError
	require.ErrorAs(t, err, &qe)
	require.Len(t, qe.Errors, 1)
	assert.Equal(t, "127.0.0.1:1", qe.Errors[0].Addr)
	assert.ErrorIs(t, err, distlock.ErrMasterDown)
	assert.Contains(t, err.Error(), "connection refused")
}

func TestNewClientFromPools(t *testing.T) {
	servers := []string{masters[0], masters[1], masters[2]}
	pools := make([]distlock.Pool, len(servers))
	for i, addr := range servers {
		p := &redis.Pool{DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr)
		}}
		defer p.Close() // the caller owns its pools
		pools[i] = p
	}
	c, err := distlock.NewClientFromPools(pools)
	require.NoError(t, err)
	defer c.Close()
	lease, err := newMutex(t, c, lockName(t)).TryLock(context.Background())
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(context.Background()))

	_, err = distlock.NewClientFromPools([]distlock.Pool{pools[0], pools[1], pools[0]})
	require.ErrorContains(t, err, "pools[2]: duplicate pool (same as pools[0])")
	_, err = distlock.NewClientFromPools(nil)
	require.ErrorContains(t, err, "pools: at least one pool")
	_, err = distlock.NewClientFromPools([]distlock.Pool{nil})
	require.ErrorContains(t, err, "pools[0]: pool is nil")
}

func TestNewMutexRejectsBadInput(t *testing.T) {
	c := newClient(t, masters)
	tests := map[string]struct {
		name string
		opts []distlock.Option
		want string
	}{
		"empty name":             {name: "", want: "lock name: must not be empty"},
		"ttl below 1ms":          {name: "x", opts: []distlock.Option{distlock.WithTTL(time.Microsecond)}, want: "WithTTL: must be at least 1ms"},
		"negative ttl":           {name: "x", opts: []distlock.Option{distlock.WithTTL(-time.Second)}, want: "WithTTL"},
		"ttl not over drift":     {name: "x", opts: []distlock.Option{distlock.WithTTL(2 * time.Millisecond)}, want: "WithTTL: TTL 2ms must be larger than the drift"},
		"ttl under margin":       {name: "x", opts: []distlock.Option{distlock.WithTTL(3 * time.Millisecond)}, want: "WithTTL: TTL 3ms leaves"},
		"ttl too short to renew": {name: "x", opts: []distlock.Option{distlock.WithTTL(5 * time.Millisecond)}, want: "WithTTL: TTL 5ms is too short to renew"},
		"NaN factor":             {name: "x", opts: []distlock.Option{distlock.WithDrift(math.NaN(), time.Hour)}, want: "WithDrift: factor must be a number in [0, 1), got NaN"},
		"infinite factor":        {name: "x", opts: []distlock.Option{distlock.WithDrift(math.Inf(1), 0)}, want: "WithDrift: factor"},
		"drift over ttl":         {name: "x", opts: []distlock.Option{distlock.WithDrift(0.5, time.Hour)}, want: "WithDrift: the drift"},
		"negative margin":        {name: "x", opts: []distlock.Option{distlock.WithRenewalMargin(-1)}, want: "WithRenewalMargin: must not be negative"},
		"margin too large":       {name: "x", opts: []distlock.Option{distlock.WithRenewalMargin(time.Minute)}, want: "WithRenewalMargin: margin 1m0s leaves no validity"},
		"negative interval":      {name: "x", opts: []distlock.Option{distlock.WithRenewalInterval(-time.Second)}, want: "WithRenewalInterval: must be positive"},
		"interval too long":      {name: "x", opts: []distlock.Option{distlock.WithRenewalInterval(time.Minute)}, want: "WithRenewalInterval: 1m0s must be shorter"},
		"negative max hold":      {name: "x", opts: []distlock.Option{distlock.WithMaxHold(-time.Second)}, want: "WithMaxHold: must not be negative"},
		"reserved prefix":        {name: "__distlock:fence:{x}", want: `the prefix "__distlock:" is reserved`},
		"brace without tag":      {name: "a}b", want: "contains '}' but no hash tag"},
		"empty hash tag":         {name: "a{}b", want: "contains '}' but no hash tag"},
		"drift factor >= 1":      {name: "x", opts: []distlock.Option{distlock.WithDrift(1, 0)}, want: "WithDrift: factor must be a number in [0, 1)"},
		"negative factor":        {name: "x", opts: []distlock.Option{distlock.WithDrift(-0.1, 0)}, want: "WithDrift: factor"},
		"negative constant":      {name: "x", opts: []distlock.Option{distlock.WithDrift(0.01, -time.Millisecond)}, want: "WithDrift: constant must not be negative"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m, err := c.NewMutex(tc.name, tc.opts...)
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Contains(t, err.Error(), tc.want)
			// Do validates the same way, before touching any master.
			err = c.Do(context.Background(), tc.name, func(context.Context) error { panic("must not run") }, tc.opts...)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestClosedClient(t *testing.T) {
	c, err := distlock.NewClient(masters)
	require.NoError(t, err)
	m := newMutex(t, c, lockName(t))
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	_, err = m.TryLock(context.Background())
	assert.ErrorIs(t, err, distlock.ErrClosed)
	assert.ErrorIs(t, err, distlock.ErrNotAcquired)
}

// NewClient's error: redact stops looking for the '@' at the first of them.
func TestPasswordNeverInErrors(t *testing.T) {
	for _, addr := range []string{
		"redis://user:se/cret@127.0.0.1:6379",
		"redis://:se#cret@127.0.0.1:6379",
		"redis://:se?cret@127.0.0.1:6379",
		"redis://:1234?5678@127.0.0.1:6379",
	} {
		_, err := distlock.NewClient([]string{addr})
		require.Error(t, err)
		t.Logf("%s -> %v", addr, err)
		assert.False(t, strings.Contains(err.Error(), "cret") || strings.Contains(err.Error(), "5678"), "password leaked: %v", err)
	}
}

// counts twice toward the quorum.
func TestDuplicateMappedIPv4(t *testing.T) {
	_, err := distlock.NewClient([]string{"127.0.0.1:6379", "[::ffff:127.0.0.1]:6379", "127.0.0.2:6379"})
	assert.Error(t, err, "one server counted twice toward the quorum")
}
