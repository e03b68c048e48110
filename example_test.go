package distlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
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
