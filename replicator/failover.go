package replicator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
)

// candidate is what a probe of one host of source.dsn found.
type candidate struct {
	dsn         dbconn.DSN
	info        dbconn.ServerInfo
	origin      archive.Source
	pos         binlog.GTIDSet
	state       []binlog.MariaDBGTID // MariaDB's gtid_binlog_state: the last GTID per domain and server
	replicating string               // why the host is a replica ("" when it is not)
	// lost names the archived transactions it lacks when failover takes
	// it anyway (AcceptLost).
	lost string
}

// lacks names the transactions of held the candidate does not have (""
// when it has them all). On MariaDB, a sequence number at or past
// binvault's is not enough: the candidate may have written its own
// transactions at those numbers. Its binlog state must show the server
// of binvault's last GTID in each domain at that GTID or later.
func (c candidate) lacks(held binlog.GTIDSet) string {
	if !c.pos.Contains(held) {
		return missingFrom(held, c.pos, c.state)
	}
	if c.info.Flavor != dbconn.MariaDB {
		return ""
	}
	for _, g := range held.Domains() {
		if seen(c.state, g) < g.Seq {
			return missingFrom(held, c.pos, c.state)
		}
	}
	return ""
}

// seen is the last sequence number of g's domain and server in a binlog
// state (0: none).
func seen(state []binlog.MariaDBGTID, g binlog.MariaDBGTID) uint64 {
	for _, s := range state {
		if s.Domain == g.Domain && s.Server == g.Server {
			return s.Seq
		}
	}
	return 0
}

// errNotPrimary: the host answers but is no writable primary (read_only,
// or replicating from another server). It is only an error with several
// hosts: binvault then looks for the primary among them.
type errNotPrimary struct {
	host   dbconn.DSN
	reason string
}

func (e *errNotPrimary) Error() string {
	return fmt.Sprintf("%s is not a writable primary: %s", e.host, e.reason)
}

// probe reads what failover needs from one host: its identity, whether it
// is a writable primary, and its GTID position. Whether it replicates is
// read only with several hosts (SHOW ALL SLAVES STATUS takes SLAVE
// MONITOR, which a single-host setup need not grant).
func (s *Source) probe(ctx context.Context, d dbconn.DSN) (candidate, error) {
	c := candidate{dsn: d}
	db, err := dbconn.Open(ctx, "source", d)
	if err != nil {
		return c, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if c.info, err = dbconn.Inspect(ctx, db); err != nil {
		return c, dbconn.Explain("source", d, err)
	}
	var host string
	db.QueryRowContext(ctx, "SELECT @@hostname").Scan(&host)
	c.origin = archive.Source{Flavor: c.info.Flavor, Version: c.info.Version, ServerID: c.info.ServerID, Hostname: host, Port: d.Port}
	if c.pos, err = binlog.ParseGTIDSet(c.info.Flavor, strings.ReplaceAll(c.info.GTIDPosition, "\n", "")); err != nil {
		return c, fmt.Errorf("%s: GTID position %q: %w", d, c.info.GTIDPosition, err)
	}
	if c.info.Flavor == dbconn.MariaDB {
		var state string
		if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_state").Scan(&state); err != nil {
			return c, dbconn.Explain("source", d, err)
		}
		c.state = binlog.ParseMariaDBGTIDList(strings.ReplaceAll(state, "\n", ""))
	}
	if len(s.opts.Hosts) < 2 {
		return c, nil
	}
	if c.replicating, err = replicatingFrom(ctx, db, c.info.Flavor); err != nil {
		if dbconn.IsMissingPrivilege(err) {
			return c, usage.Errorf("source user %q may not list replication on %s: with several hosts in source.dsn binvault checks that the one it follows replicates from no other; GRANT SLAVE MONITOR ON *.* TO it (MariaDB 10.5.9+; REPLICATION CLIENT on MySQL)", d.User, d.Addr())
		}
		return c, dbconn.Explain("source", d, err)
	}
	return c, nil
}

// notPrimary says why a probed host cannot be the primary ("" if it can).
func (c candidate) notPrimary() string {
	switch {
	case c.info.ReadOnly:
		return "read_only=ON"
	case c.replicating != "":
		return c.replicating
	case len(c.info.SourceProblems()) > 0:
		return c.info.SourceProblems()[0]
	}
	return ""
}

// replicatingFrom names the primary a server replicates from, "" when no
// replication thread of it runs. SHOW ALL SLAVES STATUS lists every
// connection of a multi-source MariaDB replica.
func replicatingFrom(ctx context.Context, db *sql.DB, flavor string) (string, error) {
	q := "SHOW ALL SLAVES STATUS"
	if flavor == dbconn.MySQL {
		q = "SHOW REPLICA STATUS"
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", err
		}
		var host, port string
		running := false
		for i, c := range cols {
			switch strings.ToLower(c) {
			case "master_host", "source_host":
				host = vals[i].String
			case "master_port", "source_port":
				port = vals[i].String
			case "slave_io_running", "slave_sql_running", "replica_io_running", "replica_sql_running":
				running = running || strings.EqualFold(vals[i].String, "Yes") || strings.EqualFold(vals[i].String, "Connecting")
			}
		}
		if running {
			return fmt.Sprintf("it replicates from %s:%s", host, port), nil
		}
	}
	return "", rows.Err()
}

// missingFrom names the transactions of held that a server at pos (with
// binlog state state) lacks: per domain, those of the server of held's
// last GTID after the last one the server has.
func missingFrom(held, pos binlog.GTIDSet, state []binlog.MariaDBGTID) string {
	doms := held.Domains()
	if doms == nil { // MySQL: no per-domain order to name a range by
		return fmt.Sprintf("binvault holds %s, it has %s", held, pos)
	}
	var parts []string
	for _, g := range doms {
		have := seen(state, g)
		if state == nil {
			at, _ := pos.At(g.Domain)
			have = at.Seq
		}
		if g.Seq <= have {
			continue
		}
		first := binlog.MariaDBGTID{Domain: g.Domain, Server: g.Server, Seq: have + 1}
		if first.Seq == g.Seq {
			parts = append(parts, fmt.Sprintf("%s (1 transaction)", g))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s…%s (%d transactions)", first, g, g.Seq-have))
	}
	return strings.Join(parts, ", ")
}

// findPrimary probes every host of source.dsn and picks the one binvault
// may continue from: writable, not replicating, of the same flavor, and
// holding every transaction binvault holds. Two such hosts are a split
// brain: binvault picks neither. The error lists why each host was
// passed over.
func (s *Source) findPrimary(ctx context.Context, held binlog.GTIDSet) (candidate, error) {
	var valid, lacking []candidate
	var reasons []string
	for _, h := range s.opts.Hosts {
		pctx, cancel := context.WithTimeout(ctx, h.Timeout+5*time.Second)
		c, err := s.probe(pctx, h)
		cancel()
		switch {
		case err != nil:
			reasons = append(reasons, fmt.Sprintf("%s: %s", h.Addr(), oneLine(err.Error())))
		case c.notPrimary() != "":
			reasons = append(reasons, fmt.Sprintf("%s: %s", h.Addr(), c.notPrimary()))
		case c.info.Flavor != s.info.Flavor:
			reasons = append(reasons, fmt.Sprintf("%s: a %s server, binvault archives %s", h.Addr(), c.info.Flavor, s.info.Flavor))
		case c.lacks(held) != "":
			c.lost = c.lacks(held)
			lacking = append(lacking, c)
			reasons = append(reasons, fmt.Sprintf("%s: writable, but lacks archived transactions %s: they were lost with the old primary; binvault waits for a server that holds them (binvault run --accept-lost-transactions continues from this one, losing them)", h.Addr(), c.lacks(held)))
		default:
			valid = append(valid, c)
		}
	}
	if len(valid) == 0 && len(lacking) == 1 && s.opts.AcceptLost {
		return lacking[0], nil
	}
	switch len(valid) {
	case 1:
		return valid[0], nil
	case 0:
		return candidate{}, errors.New("no host of source.dsn can be the primary: " + strings.Join(reasons, "; "))
	}
	var names []string
	for _, c := range valid {
		names = append(names, c.dsn.Addr())
	}
	return candidate{}, fmt.Errorf("several hosts of source.dsn are writable primaries holding binvault's history (%s): a split brain; binvault follows none until only one is writable", strings.Join(names, ", "))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// PickPrimary chooses, at start, the host of o.Hosts that is the primary:
// the one writable server that replicates from no other. It waits up to
// o.FailoverWait for one to appear (a failover may be under way); then
// the error lists why each host was passed over.
func PickPrimary(ctx context.Context, o SourceOptions) (dbconn.DSN, error) {
	s := &Source{opts: o}
	deadline := time.Now().Add(o.FailoverWait)
	for {
		var primaries []dbconn.DSN
		var reasons []string
		for _, h := range o.Hosts {
			pctx, cancel := context.WithTimeout(ctx, h.Timeout+5*time.Second)
			c, err := s.probe(pctx, h)
			cancel()
			switch {
			case usage.Is(err):
				return dbconn.DSN{}, err // wrong credentials are wrong on every host
			case err != nil:
				reasons = append(reasons, fmt.Sprintf("%s: %s", h.Addr(), oneLine(err.Error())))
			case c.info.ReadOnly || c.replicating != "":
				reasons = append(reasons, fmt.Sprintf("%s: %s", h.Addr(), c.notPrimary()))
			default:
				primaries = append(primaries, h)
			}
		}
		switch {
		case len(primaries) == 1:
			return primaries[0], nil
		case len(primaries) > 1:
			var names []string
			for _, p := range primaries {
				names = append(names, p.Addr())
			}
			return dbconn.DSN{}, usage.Errorf("source.dsn: several hosts are writable primaries (%s): make all but the primary read_only replicas, then start again", strings.Join(names, ", "))
		case time.Now().After(deadline):
			return dbconn.DSN{}, usage.Errorf("source.dsn: no host is a writable primary: %s", strings.Join(reasons, "; "))
		}
		o.Log.Warn("no host of source.dsn is a writable primary yet; waiting (source.failover_wait)", "hosts", strings.Join(reasons, "; "))
		select {
		case <-ctx.Done():
			return dbconn.DSN{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// CheckHolds refuses, before streaming, a primary that lacks transactions
// binvault already holds: streaming from it would fork the history (they
// were lost with a previous primary, or the server was rebuilt from an
// older copy). With o.AcceptLost it instead continues the spool from the
// primary's position and records the fork.
func CheckHolds(ctx context.Context, o SourceOptions, spool *Spool, flavor string, pos binlog.Position) error {
	held, err := binlog.ParseGTIDSet(flavor, pos.GTIDSet)
	if err != nil || held.IsZero() {
		return nil
	}
	s := &Source{opts: o}
	c, err := s.probe(ctx, o.DSN)
	if err != nil {
		return err
	}
	l := c.lacks(held)
	if l == "" {
		return nil
	}
	if !o.AcceptLost {
		return usage.Errorf("the primary %s lacks transactions binvault already holds: %s; they were lost with a previous primary or the server was rebuilt from an older copy: point source.dsn at a server that holds them, or run with --accept-lost-transactions to continue from this one without them (it is at %q, binvault at %q)", o.DSN, l, c.pos.String(), held.String())
	}
	if err := spool.Fork(c.origin, binlog.Position{GTIDSet: c.pos.String()}, archive.Fork{After: pos, Lost: l, Time: time.Now().UTC()}); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	o.Log.Error("STARTING FROM A PRIMARY THAT LACKS ARCHIVED TRANSACTIONS (--accept-lost-transactions): the archive records a fork and continues from the primary's position; restores past this point need a backup taken after it, and replicas that applied the lost transactions must be rebuilt",
		"primary", o.DSN.String(), "lost", l, "abandoned_end", pos.GTIDSet, "continues_from", c.pos.String())
	return nil
}
