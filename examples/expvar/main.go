// Command expvar publishes a Client's state and events with the standard
// expvar package, as a service would for its dashboards: Client.Stats under
// "distlock" and a count of each kind of event (from WithObserver) under
// "distlock_events", on /debug/vars. Warnings (a master suspected down, a
// renewal failing, a lease lost) go to stderr through WithLogger.
//
// It starts three local redis-servers (or uses -masters), runs four workers
// that lock and unlock for a while, pauses one master in the middle (so the
// log and the stats show it down and back), then fetches its own
// /debug/vars and prints the two variables.
//
//	go run ./examples/expvar
//	go run ./examples/expvar -serve 127.0.0.1:8080   # and keep serving
package main

import (
	"context"
	"encoding/json"
	"expvar"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/distlock/distlock"
	"github.com/distlock/distlock/distlocktest"
)

func main() {
	mastersFlag := flag.String("masters", "", "comma-separated master addresses (empty: start 3 local redis-servers)")
	serve := flag.String("serve", "", "keep serving /debug/vars on this address after the run (empty: exit)")
	flag.Parse()
	log.SetFlags(0)

	var servers []*distlocktest.Server
	addrs := strings.Split(*mastersFlag, ",")
	if *mastersFlag == "" {
		var err error
		if servers, err = distlocktest.StartServers(3); err != nil {
			log.Fatal(err)
		}
		defer distlocktest.CloseAll(servers)
		addrs = distlocktest.Addrs(servers)
	}

	// Every event counted by kind; the logger says what an operator must see.
	events := expvar.NewMap("distlock_events")
	c, err := distlock.NewClient(addrs,
		distlock.WithMasterTimeout(200*time.Millisecond),
		distlock.WithObserver(func(ev distlock.Event) { events.Add(ev.Kind.String(), 1) }),
		distlock.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	expvar.Publish("distlock", expvar.Func(func() any { return c.Stats() }))

	ln, err := net.Listen("tcp", cmpOr(*serve, "127.0.0.1:0"))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.DefaultServeMux} // expvar registers /debug/vars there
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	// Four workers on two names, for two seconds; one master paused for a
	// moment in the middle.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_ = c.Do(ctx, fmt.Sprintf("expvar-demo:%d", i%2), func(context.Context) error {
					time.Sleep(5 * time.Millisecond)
					return nil
				}, distlock.WithTTL(time.Second))
			}
		}()
	}
	if servers != nil {
		time.Sleep(500 * time.Millisecond)
		_ = servers[2].Pause()
		time.Sleep(500 * time.Millisecond)
		fmt.Printf("mid-run, master %s paused: %s\n", servers[2].Addr(), vars(ln.Addr().String(), "distlock"))
		_ = servers[2].Resume()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // the probe re-admits the master
	fmt.Printf("distlock:        %s\n", vars(ln.Addr().String(), "distlock"))
	fmt.Printf("distlock_events: %s\n", vars(ln.Addr().String(), "distlock_events"))
	if *serve != "" {
		fmt.Printf("serving http://%s/debug/vars; Ctrl-C to stop\n", ln.Addr())
		select {}
	}
}

// vars fetches /debug/vars from addr and returns the variable name as JSON.
func vars(addr, name string) string {
	resp, err := http.Get("http://" + addr + "/debug/vars")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(body, &all); err != nil {
		return err.Error()
	}
	return string(all[name])
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
