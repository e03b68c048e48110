package distlock

import (
	"context"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// pubsubPing is how often a subscriber connection is pinged; one silent for
// twice as long is taken as dead and re-established.
const pubsubPing = time.Second

// pubsub keeps one subscriber connection to a master, re-established after
// failures (a master restart), subscribed to a changing set of channels.
// Messages go to onMsg, on pubsub's own goroutine. close stops it and waits.
//
// A sharded pubsub subscribes with SSUBSCRIBE, one channel per command (a
// Redis Cluster node takes only channels of one slot in one command, and
// only of the slots it owns), to a node of a cluster; the node drops the
// channels of a slot that leaves it, and refuses with MOVED those of a
// slot it does not own: both call moved, whose caller moves them.
type pubsub struct {
	ms      *master
	onMsg   func(channel string, data []byte)
	sharded bool
	moved   func() // sharded: a channel is not, or no longer, subscribed on this node

	mu   sync.Mutex     // guards want and writes on conn
	want map[string]int // channel -> number of interested callers
	conn redis.Conn     // the subscribed connection; nil between sessions

	stop chan struct{}
	done chan struct{}
}

func startPubSub(ms *master, onMsg func(channel string, data []byte)) *pubsub {
	return startSubscriber(ms, onMsg, false, nil)
}

func startSubscriber(ms *master, onMsg func(channel string, data []byte), sharded bool, moved func()) *pubsub {
	p := &pubsub{ms: ms, onMsg: onMsg, sharded: sharded, moved: moved, want: make(map[string]int), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// add subscribes to channel (counted: remove undoes one add).
func (p *pubsub) add(channel string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want[channel]++
	if p.want[channel] == 1 && p.conn != nil {
		_ = sendFlush(p.conn, p.cmd("SUBSCRIBE"), channel) // a failure shows in the reader, which reconnects
	}
}

// remove undoes one add.
func (p *pubsub) remove(channel string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.want[channel]--; p.want[channel] > 0 {
		return
	}
	delete(p.want, channel)
	if p.conn != nil {
		_ = sendFlush(p.conn, p.cmd("UNSUBSCRIBE"), channel)
	}
}

// cmd returns the sharded form of a subscription command for a sharded
// pubsub.
func (p *pubsub) cmd(name string) string {
	if p.sharded {
		return "S" + name
	}
	return name
}

// sendFlush writes one command on conn and flushes (mu held: writes on the
// subscribed connection are serialized by it).
func sendFlush(conn redis.Conn, cmd string, args ...any) error {
	if err := conn.Send(cmd, args...); err != nil {
		return err
	}
	return conn.Flush()
}

func (p *pubsub) close() {
	close(p.stop)
	<-p.done
}

func (p *pubsub) run() {
	defer close(p.done)
	delay := probeMin
	for {
		if p.session() {
			delay = probeMin
		}
		t := time.NewTimer(delay)
		select {
		case <-p.stop:
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, probeMax)
	}
}

// subscribe sends the subscriptions of a new session (mu held): the idle
// channel, which puts the connection in subscriber mode from its first
// command, with or without channels of interest, so that PING is answered
// in the subscriber format; then the channels wanted, with one command
// (plain) or one each (sharded).
func (p *pubsub) subscribe() error {
	if err := p.conn.Send("SUBSCRIBE", idleChannel); err != nil {
		return err
	}
	if p.sharded {
		for ch := range p.want {
			if err := p.conn.Send("SSUBSCRIBE", ch); err != nil {
				return err
			}
		}
	} else if len(p.want) > 0 {
		channels := make([]any, 0, len(p.want))
		for ch := range p.want {
			channels = append(channels, ch)
		}
		if err := p.conn.Send("SUBSCRIBE", channels...); err != nil {
			return err
		}
	}
	return p.conn.Flush()
}

// session runs one connection until it fails or stop; it reports whether it
// got as far as subscribing.
func (p *pubsub) session() bool {
	ctx, cancel := context.WithTimeout(context.Background(), p.ms.dialTimeout)
	conn, err := p.ms.pool.GetContext(ctx)
	cancel()
	if err != nil {
		return false
	}
	defer conn.Close()

	p.mu.Lock()
	p.conn = conn
	if err = p.subscribe(); err != nil {
		p.conn = nil
	}
	p.mu.Unlock()
	if err != nil {
		return false
	}

	// The writer side: ping an idle connection, and unsubscribe from
	// everything at stop, which ends the reader below.
	writerDone := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(writerDone)
		t := time.NewTicker(pubsubPing)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-p.stop:
				p.mu.Lock()
				_ = sendFlush(conn, "UNSUBSCRIBE")
				if p.sharded {
					_ = sendFlush(conn, "SUNSUBSCRIBE")
				}
				p.mu.Unlock()
				return
			case <-t.C:
				p.mu.Lock()
				err := sendFlush(conn, "PING", "")
				p.mu.Unlock()
				if err != nil {
					return
				}
			}
		}
	}()
	defer func() {
		p.mu.Lock()
		p.conn = nil
		p.mu.Unlock()
		close(quit)
		<-writerDone
	}()
	subscribed := 0 // channels subscribed, plain and sharded
	for {
		v, err := redis.Values(redis.ReceiveWithTimeout(conn, 2*pubsubPing))
		if err != nil {
			if p.sharded && isReplyError(err) { // a refused SSUBSCRIBE (MOVED): the connection is fine
				p.moved()
				continue
			}
			return true
		}
		if len(v) < 2 {
			continue
		}
		kind, _ := redis.String(v[0], nil)
		channel, _ := redis.String(v[1], nil)
		switch kind {
		case "message", "smessage":
			if len(v) == 3 {
				data, _ := redis.Bytes(v[2], nil)
				p.onMsg(channel, data)
			}
		case "subscribe", "ssubscribe":
			subscribed++
		case "unsubscribe", "sunsubscribe":
			subscribed--
			if kind == "sunsubscribe" {
				p.mu.Lock()
				dropped := p.want[channel] > 0 // not asked for: its slot left the node
				p.mu.Unlock()
				if dropped {
					p.moved()
				}
			}
			if subscribed <= 0 {
				select {
				case <-p.stop:
					return true // the unsubscriptions sent at stop went through
				default:
				}
			}
		}
	}
}
