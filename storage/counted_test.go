package storage_test

import (
	"bytes"
	"context"
	"maps"
	"testing"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
)

func TestCountedCountsEachRequestOnce(t *testing.T) {
	fs, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	st := storage.Counted(fs, func(op string) { got[op]++ })
	ctx := context.Background()
	st.Put(ctx, "a/1", bytes.NewReader([]byte("x")))
	st.PutIfAbsent(ctx, "a/2", bytes.NewReader([]byte("y")))
	st.PutIfAbsent(ctx, "a/2", bytes.NewReader([]byte("z")))
	storage.ReadAll(ctx, st, "a/1")
	storage.ReadPrefix(ctx, st, "a/1", 1)
	st.Stat(ctx, "a/1")
	st.List(ctx, "a/", func(storage.ObjectInfo) error { return nil })
	storage.ListAfter(ctx, st, "a/", "a/1", func(storage.ObjectInfo) error { return nil })
	st.Delete(ctx, "a/1")
	want := map[string]int{"put": 1, "put_if_absent": 2, "get": 2, "stat": 1, "list": 2, "delete": 1}
	if !maps.Equal(got, want) {
		t.Fatalf("counted %v, want %v", got, want)
	}
	if _, ok := st.(storage.Checker); !ok {
		t.Fatal("the wrapper hides the store's Check")
	}
}
