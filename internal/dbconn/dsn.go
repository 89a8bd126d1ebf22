package dbconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/binvault/binvault/internal/usage"
)

// DSN is a parsed mysql://user:password@host:port?params URL.
//
// Query parameters: tls=false|true|skip-verify|preferred (default preferred
// on TCP), ca=/path/to/ca.pem, socket=/path/to/mysqld.sock (then the host is
// only a label), timeout=10s (connect timeout).
type DSN struct {
	User     string
	Password string
	Host     string
	Port     int
	Socket   string
	TLSMode  string
	CAFile   string
	Timeout  time.Duration
}

// ParseHosts reads a mysql:// URL that may name several hosts,
// mysql://user:password@db1:3306,db2:3306?params: one DSN per host, in
// order, sharing the credentials and parameters. Its errors never contain
// the password.
func ParseHosts(raw string) ([]DSN, error) {
	prefix, hosts, rest := splitHosts(raw)
	if len(hosts) < 2 {
		d, err := Parse(raw)
		if err != nil {
			return nil, err
		}
		return []DSN{d}, nil
	}
	seen := map[string]bool{}
	var out []DSN
	for i, h := range hosts {
		if h == "" {
			return nil, fmt.Errorf("host %d of the list is empty: write mysql://user:password@db1:3306,db2:3306", i+1)
		}
		d, err := Parse(prefix + h + rest)
		if err != nil {
			return nil, fmt.Errorf("host %q: %v", h, err)
		}
		if d.Socket != "" {
			return nil, errors.New("socket= names one server: a list of hosts must use TCP")
		}
		if seen[d.Addr()] {
			return nil, fmt.Errorf("host %s appears twice in the list", d.Addr())
		}
		seen[d.Addr()] = true
		out = append(out, d)
	}
	return out, nil
}

// splitHosts cuts mysql://userinfo@h1,h2/rest into "mysql://userinfo@",
// the hosts, and the rest; a URL it cannot cut comes back whole as prefix.
func splitHosts(raw string) (prefix string, hosts []string, rest string) {
	scheme, after, ok := strings.Cut(raw, "://")
	if !ok {
		return raw, nil, ""
	}
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		end = len(after)
	}
	authority := after[:end]
	at := strings.LastIndex(authority, "@")
	return scheme + "://" + authority[:at+1], strings.Split(authority[at+1:], ","), after[end:]
}

// Parse reads a mysql:// URL naming one server. Its errors never contain
// the password.
func Parse(raw string) (DSN, error) {
	d := DSN{TLSMode: "preferred", Timeout: 10 * time.Second}
	if _, hosts, _ := splitHosts(raw); len(hosts) > 1 {
		return d, errors.New("names several hosts: only source.dsn may (the servers binvault follows as the primary changes); name one server here")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return d, errors.New("is not a URL: write mysql://user:password@host:3306 (percent-encode special characters in the password)")
	}
	if u.Scheme != "mysql" {
		return d, fmt.Errorf("scheme %q is not supported: write mysql://user:password@host:3306", u.Scheme)
	}
	if u.User == nil || u.User.Username() == "" {
		return d, errors.New("has no user: write mysql://user:password@host:3306")
	}
	d.User = u.User.Username()
	d.Password, _ = u.User.Password()
	d.Host = u.Hostname()
	if d.Host == "" {
		return d, errors.New("has no host: write mysql://user:password@host:3306")
	}
	d.Port = 3306
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return d, fmt.Errorf("port %q is not a number between 1 and 65535", p)
		}
		d.Port = n
	}
	if u.Path != "" && u.Path != "/" {
		return d, errors.New("must not name a database: binvault works on the whole server, write mysql://user:password@host:3306")
	}
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		switch k {
		case "tls":
			switch v {
			case "true", "false", "skip-verify", "preferred":
				d.TLSMode = v
			default:
				return d, fmt.Errorf("tls=%q: use tls=true, false, skip-verify or preferred", v)
			}
		case "ca":
			d.CAFile = v
		case "socket":
			d.Socket = v
		case "timeout":
			t, err := time.ParseDuration(v)
			if err != nil || t <= 0 {
				return d, fmt.Errorf("timeout=%q is not a duration like 10s", v)
			}
			d.Timeout = t
		default:
			return d, fmt.Errorf("unknown parameter %q: supported are tls, ca, socket and timeout", k)
		}
	}
	if d.CAFile != "" && d.TLSMode == "preferred" {
		d.TLSMode = "true"
	}
	return d, nil
}

// Addr is host:port.
func (d DSN) Addr() string { return net.JoinHostPort(d.Host, strconv.Itoa(d.Port)) }

// String is the URL with the password hidden, for messages.
func (d DSN) String() string {
	if d.Socket != "" {
		return fmt.Sprintf("mysql://%s@%s (socket %s)", d.User, d.Host, d.Socket)
	}
	return fmt.Sprintf("mysql://%s@%s", d.User, d.Addr())
}

// TLSConfig returns the client TLS settings, nil for tls=false or sockets.
func (d DSN) TLSConfig() (*tls.Config, error) {
	if d.Socket != "" || d.TLSMode == "false" {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: d.Host, MinVersion: tls.VersionTLS12}
	switch d.TLSMode {
	case "skip-verify", "preferred":
		cfg.InsecureSkipVerify = true
	}
	if d.CAFile != "" {
		pem, err := os.ReadFile(d.CAFile)
		if err != nil {
			return nil, usage.Errorf("%s: ca=%s: %v", d, d.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usage.Errorf("%s: ca=%s holds no PEM certificate", d, d.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

var tlsConfigs atomic.Int64

// DriverConfig returns a go-sql-driver configuration for this server.
func (d DSN) DriverConfig() (*mysql.Config, error) {
	c := mysql.NewConfig()
	c.User, c.Passwd = d.User, d.Password
	if d.Socket != "" {
		c.Net, c.Addr = "unix", d.Socket
	} else {
		c.Net, c.Addr = "tcp", d.Addr()
	}
	c.Timeout = d.Timeout
	c.ParseTime = true
	c.Loc = time.UTC
	c.MaxAllowedPacket = 0 // ask the server
	c.Params = map[string]string{"time_zone": "'+00:00'"}
	if d.Socket != "" || d.TLSMode == "false" {
		return c, nil
	}
	if d.TLSMode == "preferred" {
		// The driver's own "preferred": TLS when the server offers it.
		c.TLSConfig = "preferred"
		return c, nil
	}
	tc, err := d.TLSConfig()
	if err != nil {
		return nil, err
	}
	name := "binvault" + strconv.FormatInt(tlsConfigs.Add(1), 10)
	if err := mysql.RegisterTLSConfig(name, tc); err != nil {
		return nil, err
	}
	c.TLSConfig = name
	return c, nil
}

// Open connects and pings, mapping failures to errors that say what to fix.
// role names the server in messages ("source", "replica", "target").
func Open(ctx context.Context, role string, d DSN) (*sql.DB, error) {
	cfg, err := d.DriverConfig()
	if err != nil {
		return nil, err
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	pctx, cancel := context.WithTimeout(ctx, d.Timeout+time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, Explain(role, d, err)
	}
	return db, nil
}

// Explain turns a connection or query error into a one-line message naming
// the server (without password) and the fix. Configuration problems (bad
// credentials, unknown host) become usage errors; a server that does not
// answer stays an operational error.
func Explain(role string, d DSN, err error) error {
	var dnsErr *net.DNSError
	_, msg, isServer := ServerError(err)
	switch {
	case IsAccessDenied(err):
		return usage.Errorf("%s %s: access denied for user %q: check the user and password in %s.dsn", role, d, d.User, role)
	case IsHostNotAllowed(err):
		return usage.Errorf("%s %s: this host may not connect as %q: grant access to the user from binvault's address", role, d, d.User)
	case errors.As(err, &dnsErr):
		return usage.Errorf("%s %s: host %q does not resolve: check the host in %s.dsn", role, d, d.Host, role)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s %s: connection refused: is the server running and listening on port %d? (%w)", role, d, d.Port, err)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Errorf("%s %s: no answer within %s: check the host, port and firewall (%w)", role, d, d.Timeout, err)
	case isServer:
		return fmt.Errorf("%s %s: %s", role, d, msg)
	}
	return fmt.Errorf("%s %s: %w", role, d, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || strings.Contains(err.Error(), "i/o timeout")
}
