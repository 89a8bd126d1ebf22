package storage_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
)

// plain hides the file store's own ReadPrefix, so the generic path runs.
type plain struct{ storage.Store }

func TestReadPrefixWithoutARangedRead(t *testing.T) {
	fs, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := plain{fs}
	data := []byte(strings.Repeat("0123456789", 10))
	if _, err := st.Put(context.Background(), "k", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int64{1, 10, 99, 100, 101, 4096} {
		got, err := storage.ReadPrefix(context.Background(), st, "k", n)
		if err != nil {
			t.Fatal(err)
		}
		if want := data[:min(n, int64(len(data)))]; !bytes.Equal(got, want) {
			t.Fatalf("n=%d: got %q, want %q", n, got, want)
		}
	}
}
