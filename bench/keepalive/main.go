// Command keepalive measures how many leases one process can keep alive:
// it holds L leases on 3 local masters (TTL 2s, or -ttl) for a window and reports
// losses, lease extensions and script calls per second (counted by the
// servers) and CPU time,
// for distlock's watchdog (one scheduler per Client, extensions pipelined)
// and for a naive renewer (a goroutine and a ticker per lease, one request
// per pooled connection), in the same run on the same servers.
//
//	go run ./keepalive -leases 1000,10000,50000,100000 -window 30s
//
// With -cluster k it holds the leases, with distlock only, on one plain
// master and then on one Redis Cluster of k nodes given by one seed
// address, in the same run, so that the rows compare a cluster's per-slot
// renewal batches with a plain master's:
//
//	go run ./keepalive -cluster 3 -ttl 10s -leases 100000,300000 -window 30s
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

// ttl is the leases' TTL (-ttl); the watchdog renews every ttl/3.
var ttl = 2 * time.Second

// target is what the leases are held on: the addresses given to the
// client (for a cluster, one seed) and the redis-servers behind them.
type target struct {
	name    string
	addrs   []string
	servers []*distlocktest.Server
}

func main() {
	leasesFlag := flag.String("leases", "1000,10000,50000,100000", "comma-separated numbers of leases")
	naiveMax := flag.Int("naive-max", 50000, "run the naive renewer only up to this many leases (it loses every lease at 50000 already)")
	window := flag.Duration("window", 30*time.Second, "how long to hold the leases")
	only := flag.String("only", "", "run only this renewer (distlock or naive)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	clusterNodes := flag.Int("cluster", 0, "compare one plain master with one Redis Cluster of this many nodes (one seed address), distlock only, instead of 3 plain masters")
	flag.DurationVar(&ttl, "ttl", ttl, "the leases' TTL; the watchdog renews every ttl/3")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	log.SetFlags(0)

	targets, closeTargets := startTargets(*clusterNodes)
	defer closeTargets()

	fmt.Printf("TTL %v, window %v\n\n", ttl, *window)
	fmt.Printf("| leases | masters | renewer | losses | lease extensions/s | script calls/s | client CPU s | redis CPU s | leases per redis core | goroutines |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range strings.Split(*leasesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			log.Fatal(err)
		}
		for _, t := range targets {
			for _, impl := range []struct {
				name string
				run  func([]string, int, time.Duration, func(), func()) int
			}{{"distlock", runDistlock}, {"naive", runNaive}} {
				if *only != "" && *only != impl.name || impl.name == "naive" && (n > *naiveMax || *clusterNodes > 0) {
					continue
				}
				flush(t.servers)
				var before, after sample
				losses := impl.run(t.addrs, n, *window,
					func() { before = measure(t.servers) }, // all leases held: the window starts
					func() { after = measure(t.servers) })  // the window ends, before clean-up
				secs := after.wall.Sub(before.wall).Seconds()
				redisCPU := (after.redisCPU - before.redisCPU).Seconds()
				fmt.Printf("| %d | %s | %s | %d | %.0f | %.0f | %.2f | %.2f | %.0f | %d |\n", n, t.name, impl.name, losses,
					float64(after.pexpires-before.pexpires)/secs, float64(after.extends-before.extends)/secs, (after.cpu - before.cpu).Seconds(),
					redisCPU, float64(n)*secs/redisCPU, before.goroutines)
			}
		}
	}
}

// startTargets starts 3 plain masters or, with clusterNodes > 0, one plain
// master and one Redis Cluster of that many nodes, and returns them with
// a function that stops them all.
func startTargets(clusterNodes int) ([]target, func()) {
	plain := 3
	if clusterNodes > 0 {
		plain = 1
	}
	servers, err := distlocktest.StartServers(plain)
	if err != nil {
		log.Fatal(err)
	}
	targets := []target{{name: fmt.Sprintf("%d plain", plain), addrs: distlocktest.Addrs(servers), servers: servers}}
	if clusterNodes == 0 {
		return targets, func() { distlocktest.CloseAll(servers) }
	}
	c, err := distlocktest.StartCluster(clusterNodes)
	if err != nil {
		distlocktest.CloseAll(servers)
		log.Fatal(err)
	}
	targets = append(targets, target{name: fmt.Sprintf("1 cluster of %d", clusterNodes), addrs: c.Addrs()[:1], servers: c.Nodes()})
	return targets, func() {
		distlocktest.CloseAll(servers)
		c.Close()
	}
}

type sample struct {
	wall       time.Time
	cpu        time.Duration // this process, user + system
	redisCPU   time.Duration // the servers, user + system
	extends    int64         // EVALSHA + EVAL calls on all servers
	pexpires   int64         // PEXPIRE calls (inside scripts): one per lease extended on one master
	goroutines int
}

func measure(servers []*distlocktest.Server) sample {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	s := sample{
		wall:       time.Now(),
		cpu:        time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		goroutines: runtime.NumGoroutine(),
	}
	for _, srv := range servers {
		s.redisCPU += procCPU(srv.PID())
		info, err := redis.String(srv.Do("INFO", "commandstats"))
		if err != nil {
			log.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			var calls int64
			if _, err := fmt.Sscanf(line, "cmdstat_evalsha:calls=%d", &calls); err == nil {
				s.extends += calls
			} else if _, err := fmt.Sscanf(line, "cmdstat_eval:calls=%d", &calls); err == nil {
				s.extends += calls
			} else if _, err := fmt.Sscanf(line, "cmdstat_pexpire:calls=%d", &calls); err == nil {
				s.pexpires += calls
			}
		}
	}
	return s
}

// procCPU reads a process's user+system CPU time from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func flush(servers []*distlocktest.Server) {
	for _, s := range servers {
		if _, err := s.Do("FLUSHALL"); err != nil {
			log.Fatal(err)
		}
	}
}

// runDistlock holds n leases through one Client and counts the lost ones.
func runDistlock(addrs []string, n int, window time.Duration, started, ended func()) int {
	c, err := distlock.NewClient(addrs, distlock.WithoutRestartFence()) // masters the harness just started, empty
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	leases := make([]*distlock.Lease, n)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				m, err := c.NewMutex(fmt.Sprintf("keepalive:distlock:%d", i), distlock.WithTTL(ttl))
				if err != nil {
					log.Fatal(err)
				}
				if leases[i], err = m.TryLock(context.Background()); err != nil {
					log.Fatal(err)
				}
			}
		}()
	}
	wg.Wait()
	started()
	time.Sleep(window)
	ended()
	lost := 0
	for _, l := range leases {
		if l.Err() != nil {
			lost++
		}
	}
	for _, l := range leases {
		_ = l.Unlock(context.Background())
	}
	return lost
}

var extendScript = redis.NewScript(1, `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)

// runNaive holds n keys with a goroutine and a ticker per lease: every ttl/3
// it extends the key on each master in turn, one request per pooled
// connection, and counts a loss when a quorum did not confirm before the
// validity of the last extension ran out.
func runNaive(addrs []string, n int, window time.Duration, started, ended func()) int {
	pools := make([]*redis.Pool, len(addrs))
	for i, addr := range addrs {
		pools[i] = &redis.Pool{MaxIdle: 256, MaxActive: 256, Wait: true, DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", addr, redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
		}}
		defer pools[i].Close()
	}
	// Take the keys in pipelines: setting up is not what is measured.
	for _, p := range pools {
		c := p.Get()
		for i := range n {
			c.Send("SET", fmt.Sprintf("keepalive:naive:%d", i), "token", "PX", ttl.Milliseconds())
		}
		if _, err := c.Do(""); err != nil {
			log.Fatal(err)
		}
		c.Close()
	}
	quorum := len(pools)/2 + 1
	drift := time.Duration(float64(ttl)*0.01) + 2*time.Millisecond
	stop := make(chan struct{})
	var lost atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("keepalive:naive:%d", i)
			valid := time.Now().Add(ttl - drift)
			ticker := time.NewTicker(ttl / 3)
			defer ticker.Stop()
			for {
				select {
				case <-stop:
					return
				case <-ticker.C:
				}
				t0 := time.Now()
				ok := 0
				for _, p := range pools {
					c := p.Get()
					if v, err := redis.Int(extendScript.Do(c, key, "token", ttl.Milliseconds())); err == nil && v == 1 {
						ok++
					}
					c.Close()
				}
				if ok < quorum || time.Now().After(valid) {
					lost.Add(1)
					return
				}
				valid = t0.Add(ttl - drift)
			}
		}()
	}
	started()
	time.Sleep(window)
	ended()
	close(stop)
	wg.Wait()
	return int(lost.Load())
}
