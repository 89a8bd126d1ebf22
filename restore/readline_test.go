package restore

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

// A data object line is read whole, but never past what a server would
// take: a line without end from a hostile object is an error, not an
// unbounded allocation.
func TestReadLineIsBounded(t *testing.T) {
	long := strings.Repeat("x", 10000)
	br := bufio.NewReaderSize(strings.NewReader("INSERT INTO t VALUES ('"+long+"');\nnext\n"), 16)
	if line, err := readLineMax(br, 20000); err != nil || len(line) != len(long)+27 {
		t.Fatalf("a long line under the limit: %d bytes, %v", len(line), err)
	}
	br = bufio.NewReaderSize(strings.NewReader(long+long+"\n"), 16)
	if _, err := readLineMax(br, 15000); !errors.Is(err, errStatementTooLong) {
		t.Fatalf("a line over the limit: %v", err)
	}
	br = bufio.NewReaderSize(strings.NewReader("cut"), 16)
	if _, err := readLineMax(br, 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a line cut short: %v", err)
	}
}
