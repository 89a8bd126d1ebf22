package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Values are read with the binary protocol (a prepared statement) and the
// session in `SET NAMES binary` and time_zone '+00:00', and written as SQL
// literals that give back the same stored bytes when executed under the
// loader's session settings (see restore/load.go):
//
//	integers, YEAR        decimal digits
//	DECIMAL               the server's exact digits
//	FLOAT, DOUBLE         shortest round-trip float64 text with an exponent,
//	                      so the server parses an approximate literal (a
//	                      DECIMAL literal would cap at 65 digits)
//	BIT                   b'...'
//	binary strings, BLOB, GEOMETRY   0x... hex (X'' when empty)
//	text, ENUM, SET, JSON, temporal  '...' with \0 \n \r \Z \\ \' escaped
//	INET4, INET6, UUID    _latin1'...' (a binary string would be taken as
//	                      the packed form)
//	NULL                  NULL
//
// No literal holds a raw newline, so every statement is exactly one line.

// valueKind is how one column's values are written.
type valueKind int

const (
	kindText valueKind = iota
	kindInteger
	kindDecimal
	kindFloat
	kindDouble
	kindBit
	kindBinary
	kindTemporal
	kindTextForm
)

// kindOf maps information_schema.COLUMNS.DATA_TYPE to a rendering; known
// is false for a type this version has not been checked with (rendered as
// a quoted string, which suits the server's text form, and warned about).
func kindOf(dataType string) (k valueKind, known bool) {
	switch strings.ToLower(dataType) {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year":
		return kindInteger, true
	case "decimal", "numeric":
		return kindDecimal, true
	case "float":
		return kindFloat, true
	case "double", "real", "double precision":
		return kindDouble, true
	case "bit":
		return kindBit, true
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob",
		"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
		"multipolygon", "geometrycollection", "geomcollection":
		return kindBinary, true
	case "date", "datetime", "timestamp", "time":
		return kindTemporal, true
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set",
		"json":
		return kindText, true
	case "inet4", "inet6", "uuid":
		return kindTextForm, true
	}
	return kindText, false
}

// appendValue renders one value read from the driver. The driver's value
// types for the binary protocol are int64, float32, float64, []byte and nil
// (an unsigned BIGINT above MaxInt64 arrives as decimal []byte).
func appendValue(dst []byte, k valueKind, v any) ([]byte, error) {
	if v == nil {
		return append(dst, "NULL"...), nil
	}
	switch k {
	case kindInteger:
		switch x := v.(type) {
		case int64:
			return strconv.AppendInt(dst, x, 10), nil
		case []byte:
			if !isNumber(x, false) {
				return dst, fmt.Errorf("integer column returned %q", x)
			}
			return append(dst, x...), nil
		}
	case kindDecimal:
		if x, ok := v.([]byte); ok {
			if !isNumber(x, true) {
				return dst, fmt.Errorf("DECIMAL column returned %q", x)
			}
			return append(dst, x...), nil
		}
	case kindFloat, kindDouble:
		var f float64
		switch x := v.(type) {
		case float32:
			// Widening is exact, and the float64 text parses back to this
			// same double, which narrows back to x exactly.
			f = float64(x)
		case float64:
			f = x
		default:
			return dst, fmt.Errorf("%s column returned %T", map[valueKind]string{kindFloat: "FLOAT", kindDouble: "DOUBLE"}[k], v)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return dst, fmt.Errorf("floating-point column returned %v", f)
		}
		return strconv.AppendFloat(dst, f, 'e', -1, 64), nil
	case kindBit:
		if x, ok := v.([]byte); ok {
			dst = append(dst, "b'"...)
			for _, c := range x {
				for bit := 7; bit >= 0; bit-- {
					dst = append(dst, '0'+(c>>uint(bit))&1)
				}
			}
			if len(x) == 0 {
				dst = append(dst, '0')
			}
			return append(dst, '\''), nil
		}
	case kindBinary:
		if x, ok := v.([]byte); ok {
			if len(x) == 0 {
				return append(dst, "X''"...), nil
			}
			dst = append(dst, "0x"...)
			return hex.AppendEncode(dst, x), nil
		}
	case kindTextForm:
		// Types with a packed binary form take a binary string as that
		// form: the text form needs a character set introducer.
		if x, ok := v.([]byte); ok {
			return appendQuoted(append(dst, "_latin1"...), x), nil
		}
	case kindText, kindTemporal:
		switch x := v.(type) {
		case []byte:
			return appendQuoted(dst, x), nil
		case int64: // a text-typed column the server sends as a number
			return append(strconv.AppendInt(append(dst, '\''), x, 10), '\''), nil
		}
	}
	return dst, fmt.Errorf("unexpected %T value for a column of kind %d", v, k)
}

// quoteEscape maps the bytes that need a backslash escape inside a quoted
// literal to the escape's letter.
var quoteEscape = [256]byte{0: '0', '\n': 'n', '\r': 'r', 0x1a: 'Z', '\\': '\\', '\'': '\''}

func appendQuoted(dst, s []byte) []byte {
	dst = append(dst, '\'')
	start := 0
	for i, c := range s {
		if e := quoteEscape[c]; e != 0 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', e)
			start = i + 1
		}
	}
	dst = append(dst, s[start:]...)
	return append(dst, '\'')
}

// isNumber checks what the server sent for a numeric column, so that a
// surprise never reaches the backup as unquoted SQL.
func isNumber(b []byte, point bool) bool {
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	dots := 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
		case c == '.' && point:
			dots++
		default:
			return false
		}
	}
	return dots <= 1
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
