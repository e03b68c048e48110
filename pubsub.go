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
type pubsub struct {
	ms    *master
	onMsg func(channel string, data []byte)

	mu   sync.Mutex     // guards want and writes on psc
	want map[string]int // channel -> number of interested callers
	psc  *redis.PubSubConn

	stop chan struct{}
	done chan struct{}
}

func startPubSub(ms *master, onMsg func(channel string, data []byte)) *pubsub {
	p := &pubsub{ms: ms, onMsg: onMsg, want: make(map[string]int), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// add subscribes to channel (counted: remove undoes one add).
func (p *pubsub) add(channel string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want[channel]++
	if p.want[channel] == 1 && p.psc != nil {
		_ = p.psc.Subscribe(channel) // a failure shows in the reader, which reconnects
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
	if p.psc != nil {
		_ = p.psc.Unsubscribe(channel)
	}
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
	psc := &redis.PubSubConn{Conn: conn}

	p.mu.Lock()
	// The idle channel puts the connection in subscriber mode from its first
	// command, with or without channels of interest, so that PING is
	// answered in the subscriber format.
	channels := append(make([]any, 0, 1+len(p.want)), idleChannel)
	for ch := range p.want {
		channels = append(channels, ch)
	}
	err = psc.Subscribe(channels...)
	if err == nil {
		p.psc = psc
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
				_ = psc.Unsubscribe()
				p.mu.Unlock()
				return
			case <-t.C:
				p.mu.Lock()
				err := psc.Ping("")
				p.mu.Unlock()
				if err != nil {
					return
				}
			}
		}
	}()
	defer func() {
		p.mu.Lock()
		p.psc = nil
		p.mu.Unlock()
		close(quit)
		<-writerDone
	}()
	for {
		switch v := psc.ReceiveWithTimeout(2 * pubsubPing).(type) {
		case redis.Message:
			p.onMsg(v.Channel, v.Data)
		case redis.Subscription:
			if v.Count == 0 {
				select {
				case <-p.stop:
					return true // the UNSUBSCRIBE sent at stop went through
				default:
				}
			}
		case error:
			return true
		}
	}
}
