package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/distlock/distlock"
)

// Environment variables read by every subcommand that talks to Redis.
const (
	// envServers is the default of --servers.
	envServers = "DISTLOCK_SERVERS"
	// envPassword is the password when --password-file is not given (the
	// variable redis-cli reads too).
	envPassword = "REDISCLI_AUTH"
	// envRestartFence is the default of --restart-fence: a duration, or
	// "off" for --no-restart-fence.
	envRestartFence = "DISTLOCK_RESTART_FENCE"
)

// commonFlags holds the flags shared by every subcommand that talks to
// Redis: the masters, how to authenticate and encrypt, and the lock TTL.
// register adds them to a subcommand's FlagSet; clientOptions and newClient
// turn them into a Client.
type commonFlags struct {
	servers       string
	ttl           time.Duration
	passwordFile  string
	user          string
	tls           bool
	cacert        string
	cert          string
	key           string
	serverName    string
	insecure      bool
	dialTimeout   time.Duration
	masterTimeout time.Duration
	logLevel      string
	restartFence  string
	strictMasters bool
}

// register adds the common flags to fs. withTTL is false for subcommands
// that take no lock (status), which then have no --ttl flag.
func (c *commonFlags) register(fs *flag.FlagSet, withTTL bool) {
	// The default is resolved in addrs, so that --help does not show the
	// value of $DISTLOCK_SERVERS (a URL in it may carry a password).
	fs.StringVar(&c.servers, "servers", "", "comma-separated masters: host:port, redis://host:port/db, rediss://..., unix:///path; a Redis Cluster is one master, given by one of its nodes; credentials go in --user and --password-file (default: env "+envServers+", else "+distlock.DefaultAddr+")")
	if withTTL {
		fs.DurationVar(&c.ttl, "ttl", distlock.DefaultTTL, "lock TTL: how long the lock outlives a holder that dies; renewed every ttl/3 while held")
	}
	fs.StringVar(&c.passwordFile, "password-file", "", "read the Redis password from this file (first line); default: env "+envPassword)
	fs.StringVar(&c.user, "user", "", "Redis ACL user name")
	fs.BoolVar(&c.tls, "tls", false, "use TLS for every master (implied by any other TLS flag and by rediss:// addresses)")
	fs.StringVar(&c.cacert, "cacert", "", "PEM file of CA certificates to verify the masters with (default: system roots)")
	fs.StringVar(&c.cert, "cert", "", "PEM client certificate for TLS (with --key)")
	fs.StringVar(&c.key, "key", "", "PEM private key of --cert")
	fs.StringVar(&c.serverName, "tls-server-name", "", "server name to verify the masters' certificates against")
	fs.BoolVar(&c.insecure, "insecure", false, "TLS without verifying the masters' certificates (testing only)")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", distlock.DefaultDialTimeout, "bound on connecting to a master")
	fs.DurationVar(&c.masterTimeout, "master-timeout", distlock.DefaultMasterTimeout, "bound on one master's answer; keep it well below --ttl")
	fs.StringVar(&c.restartFence, "restart-fence", "", "how long a master that restarted or was promoted stays out of every quorum: at least the longest --ttl any process uses on these masters, or off when every master runs appendonly yes with appendfsync always and has no replicas (default: env "+envRestartFence+", else "+distlock.DefaultTTL.String()+" or --ttl, plus drift)")
	fs.BoolVar(&c.strictMasters, "strict-masters", false, "refuse masters that fail a check (a replica, with replicas, an evicting maxmemory-policy, INFO refused) instead of logging a warning")
	fs.StringVar(&c.logLevel, "log-level", "warn", "library log records to stderr at this level and above: debug, info, warn, error, or off\n(warn: a master suspected down, a renewal failing, a lease lost)")
}

// logger returns the logger of --log-level: text records on stderr, or nil
// for "off".
func (c *commonFlags) logger() (*slog.Logger, error) {
	if strings.EqualFold(c.logLevel, "off") {
		return nil, nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn, error or off", c.logLevel)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}

// addrs returns the masters named by --servers.
func (c *commonFlags) addrs() []string {
	servers := c.servers
	if servers == "" {
		servers = os.Getenv(envServers)
	}
	var out []string
	for _, a := range strings.Split(servers, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		out = []string{distlock.DefaultAddr}
	}
	return out
}

// clientOptions turns the common flags into the options of
// distlock.NewClient: credentials (from --password-file or $REDISCLI_AUTH,
// never from the command line), TLS and timeouts. Every Client option the
// tool sets is added here, in one place. Its errors never contain the
// password.
func clientOptions(c *commonFlags) ([]distlock.ClientOption, error) {
	if err := c.checkAddrs(); err != nil {
		return nil, err
	}
	var opts []distlock.ClientOption
	password, err := c.password()
	if err != nil {
		return nil, err
	}
	if password != "" {
		opts = append(opts, distlock.WithPassword(password))
	}
	if c.user != "" {
		opts = append(opts, distlock.WithUsername(c.user))
	}
	tlsConfig, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		opts = append(opts, distlock.WithTLS(tlsConfig))
	}
	logger, err := c.logger()
	if err != nil {
		return nil, err
	}
	if logger != nil {
		opts = append(opts, distlock.WithLogger(logger))
	}
	fence := c.restartFence
	if fence == "" {
		fence = os.Getenv(envRestartFence)
	}
	switch fence {
	case "":
	case "off":
		opts = append(opts, distlock.WithoutRestartFence())
	default:
		d, err := time.ParseDuration(fence)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("--restart-fence %q (or $%s): want a duration such as 30s, or off", fence, envRestartFence)
		}
		opts = append(opts, distlock.WithRestartFence(d))
	}
	if c.strictMasters {
		opts = append(opts, distlock.WithStrictMasters())
	}
	opts = append(opts,
		distlock.WithDialTimeout(c.dialTimeout),
		distlock.WithMasterTimeout(c.masterTimeout),
	)
	return opts, nil
}

// checkAddrs refuses credentials in an address: on the command line they
// show in ps, and a lone "user@" would be sent as the password (the
// redis-cli convention). The error names the master by its host only.
func (c *commonFlags) checkAddrs() error {
	for i, a := range c.addrs() {
		if !strings.Contains(a, "://") {
			continue
		}
		u, err := url.Parse(a)
		if err != nil {
			return fmt.Errorf("--servers: masters[%d]: not a valid URL", i)
		}
		if u.User != nil {
			return fmt.Errorf("--servers: masters[%d] (%s): credentials in an address are refused (they show in ps, and a lone user@ is taken as the password); use --user and --password-file or $%s", i, u.Host, envPassword)
		}
	}
	return nil
}

// password returns the password from --password-file (its first line,
// without the line end) or else from $REDISCLI_AUTH; "" when neither is set.
// Errors name the file, never its content.
func (c *commonFlags) password() (string, error) {
	if c.passwordFile == "" {
		return os.Getenv(envPassword), nil
	}
	f, err := os.Open(c.passwordFile)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	defer f.Close()
	// A password file is small; a larger one is certainly the wrong file.
	const maxPasswordFile = 64 << 10
	data, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	if err != nil {
		return "", fmt.Errorf("password file %s: %w", c.passwordFile, err)
	}
	line, _, found := strings.Cut(string(data), "\n")
	if !found && len(data) > maxPasswordFile {
		return "", fmt.Errorf("password file %s: larger than 64 KiB without a line end: not a password file", c.passwordFile)
	}
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("password file %s: the first line is empty", c.passwordFile)
	}
	return line, nil
}

// tlsConfig returns the TLS configuration asked for by the TLS flags, or nil
// when none of them is set (rediss:// addresses then use the system roots).
func (c *commonFlags) tlsConfig() (*tls.Config, error) {
	if !c.tls && c.cacert == "" && c.cert == "" && c.key == "" && c.serverName == "" && !c.insecure {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.serverName,
		InsecureSkipVerify: c.insecure, //nolint:gosec // asked for with --insecure
	}
	if c.cacert != "" {
		pem, err := os.ReadFile(c.cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate found", c.cacert)
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.cert != "" && c.key != "":
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			// The error of LoadX509KeyPair names the files and the
			// problem, not the key material.
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case c.cert != "" || c.key != "":
		return nil, errors.New("--cert and --key go together")
	}
	return cfg, nil
}

// newClient validates the common flags and returns a Client over the masters.
func (c *commonFlags) newClient() (*distlock.Client, error) {
	opts, err := clientOptions(c)
	if err != nil {
		return nil, err
	}
	return distlock.NewClient(c.addrs(), opts...)
}

// usageError is a mistake on the command line: the subcommand prints it with
// a hint to --help and exits with exitUsage.
type usageError struct{ msg string }

// Error returns the message.
func (e usageError) Error() string { return e.msg }

// usagef returns a usageError.
func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// parseArgs parses args with fs, allowing flags before and between the
// positional arguments (but not after "--"). It returns the positional
// arguments, the arguments after "--" and whether "--" was there. The help
// flag comes back as flag.ErrHelp; other mistakes as a usageError.
func parseArgs(fs *flag.FlagSet, args []string) (positional, command []string, dashdash bool, err error) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, false, err
			}
			return nil, nil, false, usageError{err.Error()}
		}
		rest := fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return positional, rest, true, nil
		}
		if len(rest) == 0 {
			return positional, nil, false, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// newFlagSet returns a FlagSet for a subcommand that reports its own errors
// (parseArgs and runCommand print them), and whose --help prints usage, an
// explanation and examples.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("distlock "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// printDefaults writes the flags of fs to w, as flag.PrintDefaults does but
// with "--" before names longer than one letter.
func printDefaults(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		typ, usage := flag.UnquoteUsage(f)
		line := "  " + dash + f.Name
		if typ != "" {
			line += " " + typ
		}
		line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			line += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintln(w, line)
	})
}
