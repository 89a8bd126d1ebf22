package serve

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog"
)

// The events binvault makes parse as the server's own, checksums included.
func TestArtificialEventsParse(t *testing.T) {
	rot := rotateEvent(7, "mariadb-bin.000042", 4, true)
	if binary.LittleEndian.Uint32(rot[len(rot)-4:]) != crc32.ChecksumIEEE(rot[:len(rot)-4]) {
		t.Fatal("rotate event: bad CRC32")
	}
	h := binlog.ParseHeader(rot)
	if h.Type != replication.ROTATE_EVENT || h.Flags&artificialFlag == 0 || h.Timestamp != 0 || int(h.Size) != len(rot) || h.ServerID != 7 {
		t.Fatalf("rotate header %+v", h)
	}
	if pos := binary.LittleEndian.Uint64(rot[binlog.HeaderSize:]); pos != 4 || string(rot[binlog.HeaderSize+8:len(rot)-4]) != "mariadb-bin.000042" {
		t.Fatalf("rotate body: pos %d name %q", pos, rot[binlog.HeaderSize+8:len(rot)-4])
	}
	hb := heartbeatEvent(7, "mariadb-bin.000042", 1234, false)
	if hh := binlog.ParseHeader(hb); hh.Type != replication.HEARTBEAT_EVENT || hh.LogPos != 1234 || string(hb[binlog.HeaderSize:]) != "mariadb-bin.000042" {
		t.Fatalf("heartbeat %+v %q", hh, hb[binlog.HeaderSize:])
	}
	gl := gtidListEvent(7, []binlog.MariaDBGTID{{Domain: 0, Server: 1, Seq: 10}, {Domain: 3, Server: 2, Seq: 5}}, 999, true)
	ev := &replication.MariadbGTIDListEvent{}
	if err := ev.Decode(gl[binlog.HeaderSize : len(gl)-4]); err != nil {
		t.Fatal(err)
	}
	if len(ev.GTIDs) != 2 || ev.GTIDs[1].DomainID != 3 || ev.GTIDs[1].ServerID != 2 || ev.GTIDs[1].SequenceNumber != 5 {
		t.Fatalf("GTID list decodes as %+v", ev.GTIDs)
	}
}

func TestErrantFindsWhatTheHistoryLacks(t *testing.T) {
	set := func(s string) binlog.GTIDSet {
		g, err := binlog.ParseGTIDSet("mariadb", s)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	end := set("0-1-100,1-2-50")
	for _, c := range []struct {
		replica string
		errant  bool
	}{
		{"0-1-100,1-2-50", false}, // at the end
		{"0-1-40", false},         // behind, one domain
		{"", false},
		{"5-9-3", false},  // a domain the history never had
		{"0-1-101", true}, // ahead
		{"0-7-100", true}, // another transaction at the same number
		{"1-2-51,0-1-3", true},
	} {
		_, _, got := errant(set(c.replica), end)
		if got != c.errant {
			t.Errorf("replica %q against %s: errant %v, want %v", c.replica, end, got, c.errant)
		}
	}
}

func TestSetKeepsUserVariables(t *testing.T) {
	ss := &session{vars: map[string]string{}, srv: &Server{checksum: "CRC32", o: Options{History: &Archived{}}}}
	ss.set("SET @master_binlog_checksum= @@global.binlog_checksum")
	ss.set("SET @slave_connect_state='0-1-5,1-2-7'")
	ss.set("SET @master_heartbeat_period= 1000000000, @mariadb_slave_capability=4")
	ss.set("SET NAMES utf8mb4")
	want := map[string]string{"master_binlog_checksum": "CRC32", "slave_connect_state": "0-1-5,1-2-7", "master_heartbeat_period": "1000000000", "mariadb_slave_capability": "4"}
	for k, v := range want {
		if ss.vars[k] != v {
			t.Errorf("@%s = %q, want %q", k, ss.vars[k], v)
		}
	}
	if len(ss.vars) != len(want) {
		t.Errorf("vars %v", ss.vars)
	}
}

func TestRegisterSlaveIsParsed(t *testing.T) {
	srv := &Server{sessions: map[uint32]*session{}}
	ss := &session{srv: srv}
	data := binary.LittleEndian.AppendUint32(nil, 4242)
	for _, s := range []string{"replica-7.example", "u", "p"} {
		data = append(data, byte(len(s)))
		data = append(data, s...)
	}
	data = binary.LittleEndian.AppendUint16(data, 3306)
	data = append(data, 0, 0, 0, 0, 0, 0, 0, 0)
	if err := ss.registerSlave(data); err != nil {
		t.Fatal(err)
	}
	if ss.serverID != 4242 || ss.host != "replica-7.example" || ss.port != 3306 || !ss.regd {
		t.Fatalf("registered %+v", ss)
	}
	if err := ss.registerSlave([]byte{1, 2}); err == nil {
		t.Fatal("a short COM_REGISTER_SLAVE was accepted")
	}
}

func TestReplicaFDEClearsCreatedAndKeepsTheChecksum(t *testing.T) {
	raw := make([]byte, binlog.HeaderSize+2+50+4+1+10+1+4)
	raw[4] = byte(replication.FORMAT_DESCRIPTION_EVENT)
	binary.LittleEndian.PutUint32(raw[fdeCreatedOffset:], 1700000000)
	binary.LittleEndian.PutUint32(raw[len(raw)-4:], crc32.ChecksumIEEE(raw[:len(raw)-4]))
	out := replicaFDE(raw, true)
	if binary.LittleEndian.Uint32(out[fdeCreatedOffset:]) != 0 {
		t.Fatal("create_timestamp kept")
	}
	if binary.LittleEndian.Uint32(out[len(out)-4:]) != crc32.ChecksumIEEE(out[:len(out)-4]) {
		t.Fatal("checksum not recomputed")
	}
	if binary.LittleEndian.Uint32(raw[fdeCreatedOffset:]) != 1700000000 {
		t.Fatal("the segment's own bytes were changed")
	}
}
