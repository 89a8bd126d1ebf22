package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver for the helpers
)

// MariaDB is one running mariadbd.
type MariaDB struct {
	Name    string
	Dir     string // datadir and friends live below it
	Port    int
	Socket  string
	LogFile string
	// ServerID is the server_id the instance runs with.
	ServerID int
	// RootPassword is root's password over TCP (root@127.0.0.1 and root@localhost).
	RootPassword string

	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

// MariaDBOptions tunes a server; the zero value gives a ROW-format primary.
type MariaDBOptions struct {
	ServerID int
	// Extra mariadbd options, e.g. "--binlog-format=STATEMENT".
	Extra []string
	// NoBinlog starts without log_bin.
	NoBinlog bool
}

var serverIDs struct {
	sync.Mutex
	next int
}

// RequireMariaDB skips the test when mariadbd is missing, saying how to get it.
// Under CI (BINVAULT_REQUIRE_SERVERS=1, set by make test) it fails instead, so a
// broken setup can't pass by skipping everything.
func RequireMariaDB(t testing.TB) {
	t.Helper()
	skipInUnitRun(t, "a MariaDB server")
	for _, bin := range []string{"mariadbd", "mariadb-install-db"} {
		if _, err := lookBin(bin); err != nil {
			missing(t, bin+" not found: run scripts/setup.sh (installs mariadb-server from Debian)")
		}
	}
}

// UnitRun is set by `make test-unit`: the fast run of the tests that need
// no server.
const UnitRun = "BINVAULT_UNIT"

func skipInUnitRun(t testing.TB, what string) {
	t.Helper()
	if os.Getenv(UnitRun) == "1" {
		t.Skipf("needs %s; make test-unit leaves it to make test", what)
	}
}

func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("BINVAULT_REQUIRE_SERVERS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func lookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// StartMariaDB initialises and starts a server, and stops it at test cleanup.
func StartMariaDB(t testing.TB, name string, opt MariaDBOptions) *MariaDB {
	t.Helper()
	RequireMariaDB(t)
	m, err := NewMariaDB(t.TempDir(), name, opt)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { m.Stop() })
	if err := m.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := m.Bootstrap(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// NewMariaDB initialises a data directory below dir without starting it.
func NewMariaDB(dir, name string, opt MariaDBOptions) (*MariaDB, error) {
	if opt.ServerID == 0 {
		serverIDs.Lock()
		serverIDs.next++
		opt.ServerID = 100 + serverIDs.next
		serverIDs.Unlock()
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	base := filepath.Join(dir, name)
	data := filepath.Join(base, "data")
	// Each server its own tmpdir: a starting server deletes every #sql*
	// file in its tmpdir, which in a shared /tmp are the temporary tables
	// of the other servers (mariadb-install-db then fails with "Unknown
	// table 'mysql.tmp_user_sys'").
	tmp := filepath.Join(base, "tmp")
	for _, d := range []string{data, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	m := &MariaDB{
		Name:         name,
		Dir:          base,
		Port:         port,
		Socket:       filepath.Join(base, "mysqld.sock"),
		LogFile:      filepath.Join(base, "error.log"),
		ServerID:     opt.ServerID,
		RootPassword: "root-" + strconv.Itoa(port),
	}
	install, err := lookBin("mariadb-install-db")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(install, "--no-defaults", "--user=root", "--datadir="+data, "--tmpdir="+tmp,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	m.args = []string{
		"--no-defaults", "--user=root",
		"--datadir=" + data,
		"--tmpdir=" + tmp,
		"--socket=" + m.Socket,
		"--pid-file=" + filepath.Join(base, "mysqld.pid"),
		"--log-error=" + m.LogFile,
		"--port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1",
		"--skip-name-resolve",
		"--server-id=" + strconv.Itoa(opt.ServerID),
		"--gtid-strict-mode=ON",
		"--innodb-buffer-pool-size=64M",
		"--innodb-log-file-size=48M",
		"--max-allowed-packet=256M",
		"--max-connections=200",
		"--performance-schema=OFF",
	}
	if !opt.NoBinlog {
		m.args = append(m.args,
			"--log-bin="+filepath.Join(data, "mariadb-bin"),
			"--binlog-format=ROW",
			"--binlog-row-image=FULL",
			"--binlog-row-metadata=FULL",
			"--log-slave-updates=ON",
		)
	}
	m.args = append(m.args, opt.Extra...)
	return m, nil
}

// Start runs mariadbd and waits until it answers on its socket.
func (m *MariaDB) Start() error {
	bin, err := lookBin("mariadbd")
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.cmd != nil {
		m.mu.Unlock()
		return errors.New("already running")
	}
	cmd := exec.Command(bin, m.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("start mariadbd: %w", err)
	}
	m.cmd = cmd
	exit := make(chan struct{})
	m.exit = exit
	m.mu.Unlock()
	go func() { cmd.Wait(); close(exit) }()

	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exit:
			return fmt.Errorf("mariadbd %s exited during start-up; log:\n%s", m.Name, tail(m.LogFile, 20))
		default:
		}
		if db, err := sql.Open("mysql", "root@unix("+m.Socket+")/"); err == nil {
			err = db.Ping()
			db.Close()
			if err == nil {
				return nil
			}
			// Once bootstrapped, root needs its password over the socket too.
			if strings.Contains(err.Error(), "1045") {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("mariadbd %s did not answer within 60s; log:\n%s", m.Name, tail(m.LogFile, 20))
}

// Bootstrap gives root a password over TCP without writing to the binlog, so
// a fresh primary starts with an empty gtid_binlog_pos.
func (m *MariaDB) Bootstrap() error {
	db, err := sql.Open("mysql", "root@unix("+m.Socket+")/?multiStatements=true")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(fmt.Sprintf(`SET sql_log_bin=0;
		CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
		ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '%[1]s';
		GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
		ALTER USER 'root'@'localhost' IDENTIFIED BY '%[1]s';
		FLUSH PRIVILEGES;`, m.RootPassword))
	return err
}

// Stop shuts the server down cleanly (SIGTERM), killing it after 30s.
func (m *MariaDB) Stop() error { return m.signal(syscall.SIGTERM, 30*time.Second) }

// Kill stops the server with SIGKILL, as a crash would.
func (m *MariaDB) Kill() error { return m.signal(syscall.SIGKILL, 10*time.Second) }

// PID returns the server's process id, or 0 when stopped.
func (m *MariaDB) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

func (m *MariaDB) signal(sig syscall.Signal, wait time.Duration) error {
	m.mu.Lock()
	cmd, exit := m.cmd, m.exit
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-exit:
		return nil
	case <-time.After(wait):
		cmd.Process.Kill()
		<-exit
		return fmt.Errorf("mariadbd %s ignored %v for %v and was killed", m.Name, sig, wait)
	}
}

// Restart stops the server cleanly and starts it again on the same port.
func (m *MariaDB) Restart() error {
	if err := m.Stop(); err != nil {
		return err
	}
	return m.Start()
}

// DSN is the binvault-style URL for user (root when empty).
func (m *MariaDB) DSN(user, password string) string {
	if user == "" {
		user, password = "root", m.RootPassword
	}
	return fmt.Sprintf("mysql://%s:%s@127.0.0.1:%d", user, password, m.Port)
}

// Addr is host:port.
func (m *MariaDB) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.Port) }

// DB opens a database/sql handle as root over TCP.
func (m *MariaDB) DB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := m.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Open opens a database/sql handle as root over TCP with extra driver params.
func (m *MariaDB) Open(params string) (*sql.DB, error) {
	dsn := fmt.Sprintf("root:%s@tcp(%s)/?multiStatements=true&parseTime=true", m.RootPassword, m.Addr())
	if params != "" {
		dsn += "&" + params
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Exec runs statements as root and fails the test on error.
func (m *MariaDB) Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	db, err := m.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %s: %v", m.Name, query, err)
	}
}

// Query returns the first column of the first row as a string.
func (m *MariaDB) QueryString(t testing.TB, query string, args ...any) string {
	t.Helper()
	db, err := m.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var s sql.NullString
	if err := db.QueryRow(query, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %s: %v", m.Name, query, err)
	}
	return s.String
}

// BinlogGTIDs lists the GTIDs in the server's binlogs, in order.
func (m *MariaDB) BinlogGTIDs(t testing.TB) []string {
	t.Helper()
	db := m.DB(t)
	rows, err := db.Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for rows.Next() {
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		var name string
		vals[0] = &name
		for i := 1; i < len(cols); i++ {
			vals[i] = new(sql.RawBytes)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
	}
	rows.Close()
	var gtids []string
	for _, f := range files {
		rows, err := db.Query("SHOW BINLOG EVENTS IN '" + f + "'")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var logName, typ, info string
			var pos, serverID, endPos int64
			if err := rows.Scan(&logName, &pos, &typ, &serverID, &endPos, &info); err != nil {
				t.Fatal(err)
			}
			if typ == "Gtid" {
				// "BEGIN GTID 0-1-5" or "GTID 0-1-5" (DDL), maybe with " cid=N"
				fields := strings.Fields(info)
				for i, fld := range fields {
					if fld == "GTID" && i+1 < len(fields) {
						gtids = append(gtids, fields[i+1])
					}
				}
			}
		}
		rows.Close()
	}
	return gtids
}

// Strings returns the first column of every row, in order.
func Strings(t testing.TB, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		out = append(out, s.String)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// FreePort asks the kernel for an unused loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
