package distlock

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// masterAddr is one parsed master address.
type masterAddr struct {
	display string // how errors name the master: host:port, plus /db when not 0; never a secret
	server  string // the server, for duplicate detection: lower-case host (canonical IP), numeric port; or unix:path
	network string // for redis.DialContext: "tcp" or "unix"
	address string
	opts    []redis.DialOption
}

// parseAddr parses "host:port", a redis:// or rediss:// URL, or a unix://
// socket path; spaces around it are ignored. Errors show the whole address
// with any password replaced by "xxxxx".
func parseAddr(s string, cfg *clientConfig) (masterAddr, error) {
	var (
		a          masterAddr
		host, port string
		user, pass = cfg.username, cfg.password
		db         int
		useTLS     = cfg.tls != nil
	)
	s = strings.TrimSpace(s)
	shown := redact(s)
	// part quotes a piece of the parsed address for a message, unless the
	// address carries user-info: a password with an unescaped '/', '?' or
	// '#' would make the pieces parts of the password.
	part := func(x string) string {
		if strings.Contains(s, "@") {
			return ""
		}
		return fmt.Sprintf(" %q", x)
	}
	if s == "" {
		return a, fmt.Errorf("invalid address: empty")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return a, fmt.Errorf("invalid address %q: contains white space", shown)
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return a, fmt.Errorf("invalid address %q: not a valid URL", shown)
		}
		switch u.Scheme {
		case "redis", "unix":
		case "rediss":
			useTLS = true
		default:
			return a, fmt.Errorf("invalid address %q: scheme %q: must be redis, rediss or unix", shown, u.Scheme)
		}
		switch {
		case u.Opaque != "":
			return a, fmt.Errorf("invalid address %q: want %s://[user:password@]host[:port][/db]", shown, u.Scheme)
		case u.RawQuery != "" || u.ForceQuery:
			return a, fmt.Errorf("invalid address %q: query%s is not accepted: only [user:password@]host[:port][/db] (set options with ClientOption)", shown, part(u.RawQuery))
		case u.Fragment != "":
			return a, fmt.Errorf("invalid address %q: fragment%s is not accepted: only [user:password@]host[:port][/db]", shown, part(u.Fragment))
		}
		if u.User != nil {
			if p, ok := u.User.Password(); ok {
				pass = p
				if n := u.User.Username(); n != "" {
					user = n
				}
			} else {
				pass = u.User.Username() // redis-cli style: a lone user-info is the password
			}
		}
		if u.Scheme == "unix" {
			if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
				return a, fmt.Errorf("invalid address %q: want unix:///absolute/path/to/redis.sock", shown)
			}
			p := path.Clean(u.Path)
			a.network, a.address, a.server, a.display = "unix", p, "unix:"+p, "unix://"+p
			return a.withAuth(user, pass, false, cfg), nil
		}
		host, port = u.Hostname(), u.Port()
		if port == "" {
			port = "6379"
		}
		if p := strings.TrimPrefix(u.Path, "/"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 {
				return a, fmt.Errorf("invalid address %q: database%s is not a non-negative number", shown, part(p))
			}
			db = n
		}
	} else {
		var err error
		host, port, err = net.SplitHostPort(s)
		if err != nil {
			return a, fmt.Errorf("invalid address %q: want host:port, a redis:// or rediss:// URL, or unix:///path", shown)
		}
	}
	if host == "" {
		return a, fmt.Errorf("invalid address %q: host is empty", shown)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return a, fmt.Errorf("invalid address %q: port%s is not in 1-65535", shown, part(port))
	}
	host = strings.ToLower(host)
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String() // one spelling per address: ::1, not 0:0::1; 127.0.0.1, not ::ffff:127.0.0.1
	}
	a.network, a.address = "tcp", net.JoinHostPort(host, strconv.Itoa(n))
	a.server, a.display = a.address, a.address
	if db != 0 {
		a.display += "/" + strconv.Itoa(db)
		a.opts = append(a.opts, redis.DialDatabase(db))
	}
	return a.withAuth(user, pass, useTLS, cfg), nil
}

func (a masterAddr) withAuth(user, pass string, useTLS bool, cfg *clientConfig) masterAddr {
	if user != "" {
		a.opts = append(a.opts, redis.DialUsername(user))
	}
	if pass != "" {
		a.opts = append(a.opts, redis.DialPassword(pass))
	}
	if useTLS {
		a.opts = append(a.opts, redis.DialUseTLS(true))
		if cfg.tls != nil {
			a.opts = append(a.opts, redis.DialTLSConfig(cfg.tls))
		}
	}
	return a
}

// redact returns s with the password of a URL's user-info replaced by
// "xxxxx" (a lone user-info, redis-cli style, is a password too). It works
// on the text, up to the last '@' (a host never has one, a password may, as
// may '/', '?' and '#'), so it also hides the password of an address that
// does not parse.
func redact(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	info := "xxxxx"
	if hasPass {
		info = user + ":xxxxx"
	}
	return scheme + "://" + info + rest[at:]
}
