// Command leader runs a leader-election loop: three candidates (each with its
// own Client, as if on three machines) campaign for one Election; an observer
// prints each new leader as it is announced. Every two seconds the leader's
// machine "crashes": each candidate reaches the masters through its own
// fault-injecting proxies, and the leader's are cut off, so it neither
// resigns nor releases. Its watchdog tells it that it lost the lease before
// the keys expire, a new leader takes over within about one TTL, and a new
// candidate joins.
//
//	go run ./examples/leader                          # starts 3 local redis-servers
//	go run ./examples/leader -masters a:6379,b:6379,c:6379
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strings"
	"sync"
	"time"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// Node is what the leader publishes about itself.
type Node struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

func main() {
	mastersFlag := flag.String("masters", "", "comma-separated master addresses (empty: start 3 local redis-servers)")
	kills := flag.Int("kills", 3, "how many leaders to kill")
	flag.Parse()
	log.SetFlags(0)

	addrs := strings.Split(*mastersFlag, ",")
	if *mastersFlag == "" {
		servers, err := distlocktest.StartServers(3)
		if err != nil {
			log.Fatal(err)
		}
		defer distlocktest.CloseAll(servers)
		addrs = distlocktest.Addrs(servers)
		fmt.Printf("started 3 local redis-server masters: %s\n", strings.Join(addrs, ", "))
	}
	const name = "distlock-demo:leader"
	opts := []distlock.Option{distlock.WithTTL(time.Second)}
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("%+8.1fms  %s\n", float64(time.Since(start).Microseconds())/1000, fmt.Sprintf(format, args...))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A follower that watches who leads.
	watcher, err := distlock.NewClient(addrs)
	if err != nil {
		log.Fatal(err)
	}
	defer watcher.Close()
	observer, err := distlock.NewElection[Node](watcher, name, nil, opts...)
	if err != nil {
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for l := range observer.Observe(ctx) {
			if l.Vacant {
				say("observer: nobody leads")
				continue
			}
			say("observer: %s leads (%s), term %d", l.Value.ID, l.Value.Addr, l.Term)
		}
	}()

	var mu sync.Mutex
	links := map[string][]*distlocktest.Proxy{} // each candidate's way to the masters
	leaders := make(chan string, 8)
	candidate := func(i int) {
		id := fmt.Sprintf("node-%d", i)
		var proxied []string
		for _, a := range addrs {
			p, err := distlocktest.StartProxy(a)
			if err != nil {
				log.Fatal(err)
			}
			mu.Lock()
			links[id] = append(links[id], p)
			mu.Unlock()
			proxied = append(proxied, p.Addr())
		}
		c, err := distlock.NewClient(proxied, distlock.WithMasterTimeout(200*time.Millisecond))
		if err != nil {
			log.Fatal(err)
		}
		e, err := distlock.NewElection[Node](c, name, nil, opts...)
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = e.Run(ctx, Node{ID: id, Addr: fmt.Sprintf("10.0.0.%d:8080", i)}, func(ctx context.Context) error {
				say("%s: I lead", id)
				leaders <- id
				<-ctx.Done()
				say("%s: I no longer lead (%v)", id, context.Cause(ctx))
				return nil
			})
		}()
	}
	for i := 1; i <= 3; i++ {
		candidate(i)
	}
	for k := range *kills {
		leader := <-leaders
		time.Sleep(2 * time.Second)
		say("%s crashes: cut off from every master (no resign, no release)", leader)
		mu.Lock()
		for _, p := range links[leader] {
			p.SetBlackhole(true)
		}
		mu.Unlock()
		candidate(4 + k)
	}
	<-leaders
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	for _, ps := range links {
		for _, p := range ps {
			p.Close()
		}
	}
}
