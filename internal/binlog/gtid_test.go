package binlog

import (
	"reflect"
	"strings"
	"testing"
)

func mustSet(t *testing.T, flavor, s string) GTIDSet {
	t.Helper()
	set, err := ParseGTIDSet(flavor, s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestGTIDSetDomainsAndAt(t *testing.T) {
	s := mustSet(t, "mariadb", "2-5-9,0-1-100,1-3-7")
	want := []MariaDBGTID{{0, 1, 100}, {1, 3, 7}, {2, 5, 9}}
	if got := s.Domains(); !reflect.DeepEqual(got, want) {
		t.Errorf("Domains = %v, want %v (ordered by domain)", got, want)
	}
	if g, ok := s.At(1); !ok || g != (MariaDBGTID{1, 3, 7}) || g.String() != "1-3-7" {
		t.Errorf("At(1) = %v, %v", g, ok)
	}
	if _, ok := s.At(3); ok {
		t.Error("At(3) found a domain the set lacks")
	}
	empty := mustSet(t, "mariadb", "")
	if d := empty.Domains(); len(d) != 0 || empty.IsZero() || empty.String() != "" {
		t.Errorf("empty set: domains %v, zero %v, %q", d, empty.IsZero(), empty.String())
	}
	var zero GTIDSet
	if !zero.IsZero() || zero.Domains() != nil || zero.String() != "" {
		t.Error("the zero GTIDSet")
	}
	if _, ok := zero.At(0); ok {
		t.Error("At on the zero set")
	}
	my := mustSet(t, "mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	if my.Domains() != nil || my.Flavor() != "mysql" {
		t.Errorf("MySQL set: domains %v, flavor %s", my.Domains(), my.Flavor())
	}
	if _, ok := my.At(0); ok {
		t.Error("At on a MySQL set")
	}
}

func TestGTIDSetSeqsAhead(t *testing.T) {
	for _, c := range []struct {
		s, o string
		want int64
	}{
		{"0-1-10,1-2-3", "0-1-5", 5 + 3},
		{"0-1-5", "0-1-10,1-2-3", 0},
		{"0-1-10", "0-2-4", 6}, // by sequence number, whatever the server
		{"0-1-10", "0-1-10", 0},
		{"", "0-1-10", 0},
	} {
		if got := mustSet(t, "mariadb", c.s).SeqsAhead(mustSet(t, "mariadb", c.o)); got != c.want {
			t.Errorf("%q.SeqsAhead(%q) = %d, want %d", c.s, c.o, got, c.want)
		}
	}
	my := mustSet(t, "mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	if got := my.SeqsAhead(mustSet(t, "mysql", "")); got != 0 {
		t.Errorf("MySQL SeqsAhead = %d", got)
	}
}

func TestGTIDSetSameAtEqualSeq(t *testing.T) {
	for _, c := range []struct {
		s, o string
		want bool
	}{
		{"0-1-5", "0-1-5", true},
		{"0-1-5", "0-2-5", false}, // one sequence number, two transactions
		{"0-1-5,1-1-3", "1-9-3", false},
		{"0-1-5", "0-2-6", true}, // different numbers: not comparable here
		{"0-1-5", "1-2-5", true}, // other domains
		{"", "0-2-5", true},
	} {
		if got := mustSet(t, "mariadb", c.s).SameAtEqualSeq(mustSet(t, "mariadb", c.o)); got != c.want {
			t.Errorf("%q.SameAtEqualSeq(%q) = %v, want %v", c.s, c.o, got, c.want)
		}
	}
	my := mustSet(t, "mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	if !my.SameAtEqualSeq(mustSet(t, "mysql", "4e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")) {
		t.Error("MySQL SameAtEqualSeq must be true")
	}
}

func TestGTIDSetContainsGTID(t *testing.T) {
	s := mustSet(t, "mariadb", "0-1-5,2-3-7")
	for gtid, want := range map[string]bool{
		"0-1-5": true, "0-1-3": true, "0-1-6": false, "2-3-1": true, "2-3-8": false,
		"1-1-1": false, "garbage": false,
	} {
		if got := s.ContainsGTID(gtid); got != want {
			t.Errorf("ContainsGTID(%q) = %v, want %v", gtid, got, want)
		}
	}
	my := mustSet(t, "mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:8")
	for gtid, want := range map[string]bool{
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:5": true,
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:6": false,
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:8": true,
		"4e11fa47-71ca-11e1-9e33-c80aa9429562:1": false,
	} {
		if got := my.ContainsGTID(gtid); got != want {
			t.Errorf("MySQL ContainsGTID(%q) = %v, want %v", gtid, got, want)
		}
	}
}

func TestGTIDSetAddCloneEqual(t *testing.T) {
	s := mustSet(t, "mariadb", "0-1-5")
	c := s.Clone()
	if err := c.Add("0-1-6"); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("1-2-1"); err != nil {
		t.Fatal(err)
	}
	if s.String() != "0-1-5,1-2-1" || c.String() != "0-1-6" {
		t.Errorf("after adding to each: original %q, clone %q", s.String(), c.String())
	}
	if err := c.Add(""); err != nil || c.String() != "0-1-6" {
		t.Errorf("Add(\"\"): %v, %q", err, c.String())
	}
	if !c.Contains(mustSet(t, "mariadb", "0-1-6")) || c.Contains(s) || !s.Equal(mustSet(t, "mariadb", "1-2-1,0-1-5")) {
		t.Error("Contains/Equal")
	}
	var zero GTIDSet
	if !zero.Clone().IsZero() {
		t.Error("the clone of the zero set is not zero")
	}
	my := mustSet(t, "mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	mc := my.Clone()
	if err := mc.Add("3e11fa47-71ca-11e1-9e33-c80aa9429562:6"); err != nil {
		t.Fatal(err)
	}
	if my.String() != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5" || mc.String() != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-6" {
		t.Errorf("MySQL clone: original %q, clone %q", my.String(), mc.String())
	}
}

func TestParseGTIDSet(t *testing.T) {
	// Servers print long MySQL sets over several lines.
	s, err := ParseGTIDSet("mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:1-3\n")
	if err != nil || !s.ContainsGTID("4e11fa47-71ca-11e1-9e33-c80aa9429562:3") {
		t.Errorf("multi-line MySQL set: %v", err)
	}
	if _, err := ParseGTIDSet("mariadb", "0-1-x"); err == nil || !strings.Contains(err.Error(), "0-1-x") {
		t.Errorf("bad set: %v", err)
	}
}

func TestParseMariaDBGTID(t *testing.T) {
	for in, want := range map[string]MariaDBGTID{
		"0-1-5":                               {0, 1, 5},
		" 4294967295-7-18446744073709551615 ": {4294967295, 7, 18446744073709551615},
	} {
		if got, ok := ParseMariaDBGTID(in); !ok || got != want {
			t.Errorf("ParseMariaDBGTID(%q) = %v, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "0-1", "0-1-2-3", "a-1-2", "0--1", "-1-1-1", "4294967296-1-1", "0-4294967296-1", "0-1-18446744073709551616", "0-1-5x"} {
		if g, ok := ParseMariaDBGTID(in); ok {
			t.Errorf("ParseMariaDBGTID(%q) accepted: %v", in, g)
		}
	}
	got := ParseMariaDBGTIDList("0-1-5,0-2-7, 1-1-1 ,bad,,2-2")
	want := []MariaDBGTID{{0, 1, 5}, {0, 2, 7}, {1, 1, 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseMariaDBGTIDList = %v, want %v (several per domain, in order, unreadable left out)", got, want)
	}
	if got := ParseMariaDBGTIDList(""); got != nil {
		t.Errorf("empty list = %v", got)
	}
}
