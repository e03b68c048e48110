package distlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/distlock/distlock"
)

func ExampleMutex_Lock() {
	// masters are three independent redis-servers, e.g.
	// []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"}.
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	m, err := c.NewMutex("example:orders:42", distlock.WithTTL(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lease, err := m.Lock(ctx) // waits, with retries, until acquired or ctx ends
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("locked", lease.Name())

	// ... do the work, stopping when lease.Done() is closed ...

	if err := lease.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("unlocked")
	// Output:
	// locked example:orders:42
	// unlocked
}

func ExampleMutex_TryLock() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMutex("example:report")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	first, err := m.TryLock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer first.Unlock(ctx)

	// One round, no waiting: someone (here, first) holds it.
	_, err = m.TryLock(ctx)
	fmt.Println("second TryLock locked out:", errors.Is(err, distlock.ErrLocked))
	// Output:
	// second TryLock locked out: true
}

func ExampleClient_Do() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Lock, run, unlock. ctx inside ends if the lease is lost.
	err = c.Do(context.Background(), "example:nightly-batch", func(ctx context.Context) error {
		fmt.Println("running the batch under the lock")
		return nil
	}, distlock.WithTTL(30*time.Second))
	fmt.Println("done:", err)
	// Output:
	// running the batch under the lock
	// done: <nil>
}

func ExampleLease_Done() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMutex("example:job-7")
	if err != nil {
		log.Fatal(err)
	}
	lease, err := m.TryLock(context.Background())
	if err != nil {
		log.Fatal(err)
	}

	work := time.After(10 * time.Millisecond) // stands for the job
	select {
	case <-work:
		fmt.Println("job finished while the lease was held")
	case <-lease.Done():
		fmt.Println("lease ended early:", lease.Err()) // stop the job now
	}
	fmt.Println("unlock:", lease.Unlock(context.Background()))
	// Output:
	// job finished while the lease was held
	// unlock: <nil>
}

func ExampleSlots() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Three GPUs shared by every worker of the fleet: each is leased by one
	// worker at a time.
	gpus, err := distlock.NewSlots(c, "example:gpus", []string{"gpu0", "gpu1", "gpu2"})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	held := map[string]bool{}
	for range 3 {
		gpu, lease, err := gpus.Acquire(ctx)
		if err != nil {
			log.Fatal(err)
		}
		held[gpu] = true
		defer lease.Unlock(ctx)
	}
	_, _, err = gpus.TryAcquire(ctx)
	fmt.Println(len(held), "leased; a fourth:", errors.Is(err, distlock.ErrLocked))
	// Output: 3 leased; a fourth: true
}

func ExampleNewSemaphore() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sem, err := distlock.NewSemaphore(c, "example:api-quota", 2)
	if err != nil {
		log.Fatal(err)
	}
	err = sem.Do(context.Background(), func(ctx context.Context, permit int) error {
		fmt.Println("calling the API with one of", sem.Len(), "permits")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: calling the API with one of 2 permits
}

func ExampleRWMutex() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	rw, err := c.NewRWMutex("example:catalog")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	r1, err := rw.RLock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	r2, err := rw.RLock(ctx) // readers share the lock
	if err != nil {
		log.Fatal(err)
	}
	_, err = rw.TryLock(ctx)
	fmt.Println("writer while two read:", errors.Is(err, distlock.ErrLocked))
	r1.Unlock(ctx)
	r2.Unlock(ctx)
	err = rw.Do(ctx, func(ctx context.Context) error {
		fmt.Println("writing alone")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// writer while two read: true
	// writing alone
}

func ExampleMultiMutex() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Whatever order callers give, the names are locked in one order: two
	// callers locking an overlapping set cannot deadlock.
	both, err := c.NewMultiMutex([]string{"example:order:42", "example:customer:7"})
	if err != nil {
		log.Fatal(err)
	}
	err = both.Do(context.Background(), func(ctx context.Context) error {
		fmt.Println("holding", both.Names())
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: holding [example:customer:7 example:order:42]
}

func ExampleWithMinHold() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Fired on every host of a fleet within a few ms: runs once per window.
	window := fmt.Sprintf("example:report:%d", time.Now().UnixNano()) // this hour's window
	job, err := c.NewMutex(window, distlock.WithMinHold(time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for host := range 3 {
		lease, err := job.TryLock(ctx)
		if err != nil {
			fmt.Println("host", host, "skips: already run in this window")
			continue
		}
		fmt.Println("host", host, "runs the report")
		lease.Unlock(ctx) // the lock stays taken until an hour after it was acquired
	}
	// Output:
	// host 0 runs the report
	// host 1 skips: already run in this window
	// host 2 skips: already run in this window
}

func ExampleWithObserver() {
	// Count acquisitions and releases by outcome, as a metrics exporter
	// (Prometheus, OpenTelemetry) would; the observer runs synchronously
	// and must return quickly.
	var mu sync.Mutex
	counts := map[string]int{}
	observe := func(ev distlock.Event) {
		if ev.Kind != distlock.EventAcquire && ev.Kind != distlock.EventRelease {
			return
		}
		outcome := "ok"
		if ev.Err != nil {
			outcome = "failed"
		}
		mu.Lock()
		counts[ev.Kind.String()+" "+outcome]++
		mu.Unlock()
	}
	c, err := distlock.NewClient(masters, distlock.WithObserver(observe))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	m, err := c.NewMutex("example:observed")
	if err != nil {
		log.Fatal(err)
	}
	lease, err := m.TryLock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := m.TryLock(ctx); errors.Is(err, distlock.ErrLocked) {
		fmt.Println("busy")
	}
	if err := lease.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	c.Close() // events are delivered on their own goroutine: Close waits for them
	mu.Lock()
	fmt.Println(counts)
	mu.Unlock()
	// Output:
	// busy
	// map[acquire failed:1 acquire ok:1 release ok:1]
}

func ExampleClient_Stats() {
	c, err := distlock.NewClient(masters)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err := c.NewMutex("example:stats")
	if err != nil {
		log.Fatal(err)
	}
	l, err := m.Lock(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer l.Unlock(context.Background())

	// Publish it with expvar: expvar.Publish("distlock", expvar.Func(func() any { return c.Stats() })).
	s := c.Stats()
	fmt.Printf("%d of %d masters up (quorum %d), %d lease held\n", s.Up, len(s.Masters), s.Quorum, s.Leases)
	// Output:
	// 3 of 3 masters up (quorum 2), 1 lease held
}
