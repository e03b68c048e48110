// Command counter has several processes increment one Guarded counter
// stored on three Redis masters. Each increment locks, reads the newest copy
// from a quorum, adds one, and writes it back fenced by the lease's token.
// The final value is exact: no increment is lost.
//
//	go run ./examples/counter                         # starts 3 local redis-servers
//	go run ./examples/counter -procs 8 -n 200
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

const name = "distlock-demo:counter"

func main() {
	mastersFlag := flag.String("masters", "", "comma-separated master addresses (empty: start 3 local redis-servers)")
	procs := flag.Int("procs", 4, "number of worker processes")
	n := flag.Int("n", 100, "increments per process")
	worker := flag.String("worker", "", "run as worker process with this id (internal)")
	flag.Parse()
	log.SetFlags(0)

	if *worker != "" {
		runWorker(*worker, strings.Split(*mastersFlag, ","), *n)
		return
	}
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
	c, err := distlock.NewClient(addrs)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	counter, err := distlock.NewGuarded[int](c, name, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := counter.Update(ctx, func(_ context.Context, v *int) error { *v = 0; return nil }); err != nil {
		log.Fatal(err)
	}

	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for p := 1; p <= *procs; p++ {
		cmd := exec.Command(self, "-worker", fmt.Sprint(p), "-masters", strings.Join(addrs, ","), "-n", fmt.Sprint(*n))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cmd.Wait(); err != nil {
				log.Fatalf("worker %d: %v", p, err)
			}
		}()
	}
	wg.Wait()
	v, token, err := counter.Load(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d processes x %d increments in %v: counter = %d (expected %d), last fencing token %d\n",
		*procs, *n, time.Since(start).Round(time.Millisecond), v, *procs**n, token)
	if v != *procs**n {
		os.Exit(1)
	}
}

func runWorker(id string, addrs []string, n int) {
	c, err := distlock.NewClient(addrs)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Poll every 2ms while the counter is busy: short critical sections.
	counter, err := distlock.NewGuarded[int](c, name, nil,
		distlock.WithRetry(func() backoff.BackOff { return backoff.NewConstantBackOff(2 * time.Millisecond) }))
	if err != nil {
		log.Fatal(err)
	}
	for range n {
		if err := counter.Update(context.Background(), func(_ context.Context, v *int) error {
			*v++
			return nil
		}); err != nil {
			log.Fatalf("worker %s: %v", id, err)
		}
	}
	fmt.Printf("worker %s: %d increments done\n", id, n)
}
