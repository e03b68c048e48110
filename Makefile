# distlock: the two set-up commands are `make demo` and `make test`.
# Both install redis-server (Debian/Ubuntu, as root or with sudo) if it is missing.

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test bench redis

demo: redis
	go run ./examples/worker

test: redis
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	go vet ./...
	go test -race -count=1 ./...

bench: redis
	go test -run '^$$' -bench . -benchmem .

redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }
