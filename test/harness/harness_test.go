package harness

import (
	"net"
	"strings"
	"testing"
)

func TestMariaDBPrimaryStartsWithEmptyGTIDAndStops(t *testing.T) {
	m := StartMariaDB(t, "primary", MariaDBOptions{})
	if got := m.QueryString(t, "SELECT @@gtid_binlog_pos"); got != "" {
		t.Fatalf("fresh primary gtid_binlog_pos = %q, want empty", got)
	}
	if got := m.QueryString(t, "SELECT @@binlog_format"); got != "ROW" {
		t.Fatalf("binlog_format = %q", got)
	}
	m.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1)")
	if got := m.QueryString(t, "SELECT @@gtid_binlog_pos"); !strings.HasPrefix(got, "0-") {
		t.Fatalf("gtid_binlog_pos after writes = %q", got)
	}
	pid := m.PID()
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", m.Addr()); err == nil {
		t.Fatalf("server %d still listening after Stop", pid)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if got := m.QueryString(t, "SELECT COUNT(*) FROM d.t"); got != "1" {
		t.Fatalf("row count after restart = %s", got)
	}
}

func TestS3StartsAndStops(t *testing.T) {
	s := StartS3(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(s.Endpoint(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Stop()
	if _, err := net.Dial("tcp", strings.TrimPrefix(s.Endpoint(), "http://")); err == nil {
		t.Fatal("versitygw still listening after Stop")
	}
}
