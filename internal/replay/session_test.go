package replay

import (
	"encoding/binary"
	"testing"
)

func TestParseStatusVars(t *testing.T) {
	var b []byte
	ends := map[int]bool{} // offsets between two values
	add := func(v ...byte) { b = append(b, v...); ends[len(b)] = true }
	add(append([]byte{qFlags2}, binary.LittleEndian.AppendUint32(nil, optNoForeignKeyChecks)...)...)
	add(append([]byte{qSQLMode}, binary.LittleEndian.AppendUint64(nil, 1411383296)...)...)
	add(qCatalogNZ, 3, 's', 't', 'd')
	add(qAutoIncrement, 2, 0, 1, 0)
	add(qCharset, 45, 0, 45, 0, 8, 0)
	add(append([]byte{qTimeZone, 6}, "+05:30"...)...)
	add(qInvoker, 4, 'r', 'o', 'o', 't', 1, '%')
	add(qUpdatedDBNames, 2, 'a', 0, 'b', 'c', 0)
	add(qHRNow, 0x40, 0xe2, 0x01) // 123456 µs
	s, err := parseStatusVars(b)
	if err != nil {
		t.Fatal(err)
	}
	if !s.flags2Set || s.flags2 != optNoForeignKeyChecks || s.sqlMode != 1411383296 || s.autoIncInc != 2 || s.autoIncOffset != 1 ||
		s.charset != [6]byte{45, 0, 45, 0, 8, 0} || s.timeZone != "+05:30" || s.microseconds != 123456 {
		t.Fatalf("parsed %+v", s)
	}
	// A cut inside a value is reported; a cut between two values is whole.
	for n := 1; n < len(b); n++ {
		_, err := parseStatusVars(b[:n])
		if ends[n] != (err == nil) {
			t.Errorf("cut at %d of %d (between values: %v): error %v", n, len(b), ends[n], err)
		}
	}
	// An unknown code ends parsing without error, as in the server.
	if s, err := parseStatusVars(append([]byte{200, 1, 2}, b...)); err != nil || s.flags2Set {
		t.Fatalf("unknown code: %+v %v", s, err)
	}
}

func FuzzParseStatusVars(f *testing.F) {
	f.Add([]byte{qFlags2, 0, 0, 0, 0, qTimeZone, 1, 'x'})
	f.Add([]byte{qUpdatedDBNames, 3, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) { parseStatusVars(b) })
}
