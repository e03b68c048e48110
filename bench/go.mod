module github.com/distlock/distlock/bench

go 1.24

require (
	github.com/distlock/distlock v0.0.0
	github.com/gomodule/redigo v1.9.3
)

require (
	github.com/benbjohnson/clock v1.3.5 // indirect
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
)

replace github.com/distlock/distlock => ../
