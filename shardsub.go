package distlock

import "sync"

// shardSubs subscribes a cluster master's channels on sharded pub/sub:
// each channel on the node that owns its slot (in the route's map), over
// one subscriber connection per node with channels; the scripts announce
// there with SPUBLISH (see lua.sharded). It moves a channel when the map
// moves its slot (rehome, after every read of the map), and asks for the
// map again when a node refuses a channel or drops one whose slot left it.
//
// Channels are wanted from the start, but placed only once the route
// routes: until then the scripts announce with PUBLISH (a one-node
// cluster never routes), and the plain subscriber of the seed hears them.
// When routing starts, the refresher places every channel before it reads
// the map.
type shardSubs struct {
	r     *route
	onMsg func(channel string, data []byte)

	mu     sync.Mutex
	want   map[string]int      // channel -> adds
	home   map[string]*master  // channel -> the node it is subscribed on
	subs   map[*master]*pubsub // the sharded subscriber of each node used
	closed bool
}

func newShardSubs(r *route, onMsg func(channel string, data []byte)) *shardSubs {
	s := &shardSubs{r: r, onMsg: onMsg, want: map[string]int{}, home: map[string]*master{}, subs: map[*master]*pubsub{}}
	r.subs.Store(s)
	return s
}

// add subscribes to channel (counted: remove undoes one add).
func (s *shardSubs) add(channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.want[channel]++; s.want[channel] == 1 {
		s.place(channel)
	}
}

// remove undoes one add.
func (s *shardSubs) remove(channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.want[channel]--; s.want[channel] > 0 {
		return
	}
	delete(s.want, channel)
	if n := s.home[channel]; n != nil {
		s.subs[n].remove(channel)
		delete(s.home, channel)
	}
}

// place subscribes channel on the node that owns its slot, moving it from
// the node it was on (mu held).
func (s *shardSubs) place(channel string) {
	if s.closed || !s.r.active.Load() {
		return
	}
	n := s.r.owner(channel)
	old := s.home[channel]
	if n == old {
		return
	}
	if old != nil {
		s.subs[old].remove(channel)
	}
	p := s.subs[n]
	if p == nil {
		p = startSubscriber(n, s.onMsg, true, s.r.refreshSoon)
		s.subs[n] = p
	}
	p.add(channel)
	s.home[channel] = n
}

// rehome places every channel again, after a read of the slot map.
func (s *shardSubs) rehome() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.want {
		s.place(ch)
	}
}

// close stops the subscribers and waits for them.
func (s *shardSubs) close() {
	s.mu.Lock()
	s.closed = true
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	for _, p := range subs {
		p.close()
	}
}
