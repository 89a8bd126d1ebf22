package dbconn

import (
	"strings"
	"testing"
)

func TestParseHostsListsEveryHostWithTheSameCredentials(t *testing.T) {
	ds, err := ParseHosts("mysql://repl:p%40ss@db1:3306,db2,10.0.0.3:3307?tls=false&timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"db1:3306", "db2:3306", "10.0.0.3:3307"}
	if len(ds) != len(want) {
		t.Fatalf("got %d hosts, want %d", len(ds), len(want))
	}
	for i, d := range ds {
		if d.Addr() != want[i] || d.User != "repl" || d.Password != "p@ss" || d.TLSMode != "false" || d.Timeout.String() != "3s" {
			t.Errorf("host %d: %+v", i, d)
		}
	}
	one, err := ParseHosts("mysql://u:p@db1")
	if err != nil || len(one) != 1 || one[0].Addr() != "db1:3306" {
		t.Fatalf("one host: %v %+v", err, one)
	}
}

func TestParseHostsRefusesBadLists(t *testing.T) {
	for raw, want := range map[string]string{
		"mysql://u:secret@db1,,db2":           "host 2 of the list is empty",
		"mysql://u:secret@db1:3306,db1:3306":  "appears twice",
		"mysql://u:secret@db1:3306,db2:99999": `host "db2:99999": port`,
		"mysql://u:secret@db1,db2?socket=/s":  "socket=",
	} {
		_, err := ParseHosts(raw)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", raw, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", raw, err)
		}
	}
	if _, err := Parse("mysql://u:p@db1,db2"); err == nil || !strings.Contains(err.Error(), "only source.dsn") {
		t.Errorf("Parse of a host list: %v", err)
	}
}
