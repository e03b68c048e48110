# distlock: the two set-up commands are `make demo` and `make test`.
# Both install redis-server (Debian/Ubuntu, as root or with sudo) if it is missing.

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test bench bench-compare keepalive keepalive-cluster history redis

demo: redis
	go run ./examples/worker

test: redis
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	go vet ./...
	go test -race -count=1 $$(go list ./... | grep -v '/history$$')
	@# The history checker runs alone: its 8 client processes and faulted masters would load the
	@# machine under the other packages' timing-sensitive tests.
	go test -race -count=1 ./history
	go test -count=1 -run 'TestAllocationsPerCycle|TestObserverAllocs' .

bench: redis
	go test -run '^$$' -bench . -benchmem .

# distlock side by side with redsync, bsm/redislock, rueidislock and three
# reference clients (the pipelined limit, the notification limit, a naive
# client), 3 runs, on the same redis-servers; writes
# bench/results/compare.{md,csv,svg}.
bench-compare: redis
	cd bench && go run ./compare -out results

# Leases kept alive by one process, distlock against a naive renewer.
keepalive: redis
	cd bench && go run ./keepalive -window 30s

# The same at the default TTL (10s), distlock only, on one plain master
# beside one Redis Cluster of 3 nodes given by one seed address.
keepalive-cluster: redis
	cd bench && go run ./keepalive -cluster 3 -ttl 10s -leases 100000,300000 -window 30s

# The history checker's long profile: 20 seeds of 60s of faults (about 25
# minutes); a failing seed is printed and replays with -seed N.
history: redis
	go test -count=1 ./history -run 'TestHistory$$' -long -seeds 20 -duration 60s -timeout 0

redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }
