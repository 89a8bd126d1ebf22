package backup

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/storage"
)

func TestAppendValueEveryKind(t *testing.T) {
	cases := []struct {
		dataType string
		v        any
		want     string
	}{
		{"int", nil, "NULL"},
		{"tinyint", int64(-128), "-128"},
		{"smallint", int64(32767), "32767"},
		{"mediumint", int64(-8388608), "-8388608"},
		{"int", int64(math.MinInt32), "-2147483648"},
		{"bigint", int64(math.MinInt64), "-9223372036854775808"},
		{"bigint", []byte("18446744073709551615"), "18446744073709551615"}, // unsigned above MaxInt64
		{"year", int64(0), "0"},
		{"year", int64(2155), "2155"},
		{"decimal", []byte("-12345678901234567890123456789012345.123456789012345678901234567890"), "-12345678901234567890123456789012345.123456789012345678901234567890"},
		{"decimal", []byte("0.000"), "0.000"},
		{"double", float64(0.1), "1e-01"},
		{"double", math.MaxFloat64, "1.7976931348623157e+308"},
		{"double", math.SmallestNonzeroFloat64, "5e-324"},
		{"double", math.Copysign(0, -1), "-0e+00"},
		{"double", float64(1) / 3, "3.333333333333333e-01"},
		{"float", float32(0.1), "1.0000000149011612e-01"},
		{"float", float32(16777217), "1.6777216e+07"},
		{"float", float32(math.MaxFloat32), "3.4028234663852886e+38"},
		{"bit", []byte{0x05}, "b'00000101'"},
		{"bit", []byte{0x80, 0x01}, "b'1000000000000001'"},
		{"bit", []byte{}, "b'0'"},
		{"varbinary", []byte{0, 0xff, '\'', '\\'}, "0x00ff275c"},
		{"blob", []byte{}, "X''"},
		{"geometry", []byte{0, 0, 0, 0, 1, 1, 0, 0, 0}, "0x000000000101000000"},
		{"varchar", []byte("it's a \\ \"test\"\n\r\x00\x1a end"), `'it\'s a \\ "test"\n\r\0\Z end'`},
		{"text", []byte("héllo 😀"), "'héllo 😀'"},
		{"char", []byte{}, "''"},
		{"enum", []byte("b"), "'b'"},
		{"set", []byte("a,c"), "'a,c'"},
		{"json", []byte(`{"k": "v\"q"}`), `'{"k": "v\\"q"}'`},
		{"datetime", []byte("0000-00-00 00:00:00.000000"), "'0000-00-00 00:00:00.000000'"},
		{"timestamp", []byte("2038-01-19 03:14:07.999999"), "'2038-01-19 03:14:07.999999'"},
		{"time", []byte("-838:59:59.000000"), "'-838:59:59.000000'"},
		{"date", []byte("9999-12-31"), "'9999-12-31'"},
		{"inet6", []byte("::ffff:1.2.3.4"), "_latin1'::ffff:1.2.3.4'"},
		{"uuid", []byte("123e4567-e89b-12d3-a456-426655440000"), "_latin1'123e4567-e89b-12d3-a456-426655440000'"},
	}
	for _, c := range cases {
		k, known := kindOf(c.dataType)
		if !known {
			t.Errorf("%s: unknown type", c.dataType)
		}
		got, err := appendValue([]byte("x"), k, c.v)
		if err != nil {
			t.Errorf("%s %#v: %v", c.dataType, c.v, err)
			continue
		}
		if string(got) != "x"+c.want {
			t.Errorf("%s %#v: got %s, want %s", c.dataType, c.v, got[1:], c.want)
		}
		if strings.ContainsAny(string(got), "\n\r") {
			t.Errorf("%s: literal holds a raw line break: %q", c.dataType, got)
		}
	}
}

// Every float32 written as the text of its float64 widening parses back,
// through a double, to the same float32 bits.
func TestFloatTextRoundTrips(t *testing.T) {
	for _, bits := range []uint32{0, 1, 0x7f7fffff, 0x00800000, 0x3dcccccd, 0x4b800001, 0xbf800000, 0x80000001, 0x33800000} {
		f := math.Float32frombits(bits)
		b, err := appendValue(nil, kindFloat, f)
		if err != nil {
			t.Fatal(err)
		}
		d, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := math.Float32bits(float32(d)); got != bits {
			t.Errorf("float32 %08x rendered %s parses back as %08x", bits, b, got)
		}
	}
}

func TestAppendValueRejectsSurprises(t *testing.T) {
	for _, c := range []struct {
		k valueKind
		v any
	}{
		{kindInteger, []byte("1; DROP TABLE t")},
		{kindDecimal, []byte("1.2.3")},
		{kindDouble, math.NaN()},
		{kindDouble, []byte("1.5")},
		{kindBinary, int64(3)},
		{kindText, time.Now()},
	} {
		if _, err := appendValue(nil, c.k, c.v); err == nil {
			t.Errorf("kind %d value %#v: want an error", c.k, c.v)
		}
	}
}

func TestIDsSortByTimeAndParse(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 10, 15, 0, 0, time.UTC)
	a, b := NewID(t0), NewID(t0.Add(time.Second))
	if !(a < b) {
		t.Errorf("%s does not sort before %s", a, b)
	}
	if !strings.HasPrefix(a, "20261128T101500Z-") || len(a) != len("20261128T101500Z-")+6 {
		t.Errorf("id %q", a)
	}
	got, ok := ParseID(a)
	if !ok || !got.Equal(t0) {
		t.Errorf("ParseID(%s) = %v %v", a, got, ok)
	}
	for _, bad := range []string{"", "lock.json", "20261128T101500Z", "20261128T101500Z-XYZ123", "2026-11-28-abcdef", "20261128T101500Z-ABCDEF"} {
		if _, ok := ParseID(bad); ok {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func TestDataKeysAreValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for i, n := range []struct{ db, t string }{
		{"app", "accounts"}, {"a.b", "c"}, {"a", "b.c"}, {"..", "."}, {"sp ace", "ü😀/\\"},
		{strings.Repeat("é", 64), strings.Repeat("😀", 64)},
	} {
		k := dataKey("20261128T101500Z-abcdef", i, 1, n.db, n.t)
		if err := validKey(k); err != nil {
			t.Errorf("%s.%s: %v", n.db, n.t, err)
		}
		if seen[k] {
			t.Errorf("duplicate key %s", k)
		}
		seen[k] = true
		for _, elem := range strings.Split(k, "/") {
			if len(elem) > 200 {
				t.Errorf("key element longer than a file name may be: %s", elem)
			}
		}
	}
}

func validKey(k string) error { return storage.ValidateKey(k) }
