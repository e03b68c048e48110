// Command worker is distlock's demo: a few workers, each with its own Client
// as if on its own machine, take turns on one lock over three Redis masters
// and print who held it when. Halfway through, one master is killed: the
// lock keeps working on the remaining quorum.
//
//	go run ./examples/worker                          # starts 3 local redis-servers
//	go run ./examples/worker -masters a:6379,b:6379,c:6379
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

func main() {
	mastersFlag := flag.String("masters", "", "comma-separated master addresses (empty: start 3 local redis-servers)")
	workers := flag.Int("workers", 4, "number of workers")
	rounds := flag.Int("rounds", 3, "times each worker takes the lock")
	ttl := flag.Duration("ttl", 2*time.Second, "lock TTL")
	flag.Parse()
	log.SetFlags(0)

	var addrs []string
	var servers []*distlocktest.Server
	if *mastersFlag != "" {
		addrs = strings.Split(*mastersFlag, ",")
	} else {
		var err error
		if servers, err = distlocktest.StartServers(3); err != nil {
			log.Fatal(err)
		}
		defer distlocktest.CloseAll(servers)
		addrs = distlocktest.Addrs(servers)
		fmt.Printf("started 3 local redis-server masters: %s\n", strings.Join(addrs, ", "))
	}

	start := time.Now()
	var (
		out      sync.Mutex
		inside   atomic.Int32
		overlaps atomic.Int32
		holds    atomic.Int32
		killOnce sync.Once
		total    = *workers * *rounds
		wg       sync.WaitGroup
	)
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf("%+8.1fms  %s\n", float64(time.Since(start).Microseconds())/1000, fmt.Sprintf(format, args...))
	}

	opts := []distlock.ClientOption{distlock.WithMasterTimeout(200 * time.Millisecond)}
	if servers != nil {
		// The restart fence would keep these masters out for one TTL after
		// their start (10s by default): they could have restarted while
		// another client held a lock. The demo just started them empty, so
		// no lock can be lost on them.
		opts = append(opts, distlock.WithoutRestartFence())
	}
	for w := 1; w <= *workers; w++ {
		c, err := distlock.NewClient(addrs, opts...)
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		m, err := c.NewMutex("distlock-demo:nightly-report", distlock.WithTTL(*ttl))
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range *rounds {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				lease, err := m.Lock(ctx)
				cancel()
				if err != nil {
					say("worker %d  could not lock: %v", w, err)
					os.Exit(1)
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				n := holds.Add(1)
				say("worker %d  acquired  (valid for %v)", w, time.Until(lease.Until()).Round(time.Millisecond))
				time.Sleep(time.Duration(20+rand.IntN(40)) * time.Millisecond) // the work
				if int(n) == total/2 && len(servers) == 3 {
					killOnce.Do(func() {
						servers[2].Kill()
						say("master %s killed: 2 of 3 is still a quorum", servers[2].Addr())
					})
				}
				inside.Add(-1)
				if err := lease.Unlock(context.Background()); err != nil {
					say("worker %d  unlock: %v", w, err)
				} else {
					say("worker %d  released", w)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%d holds by %d workers, %d overlapping holds\n", holds.Load(), *workers, overlaps.Load())
	if overlaps.Load() != 0 {
		os.Exit(1)
	}
}
