package file_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/storage/storagetest"
)

func newStore(t *testing.T) storage.Store {
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func corrupt(t *testing.T, s storage.Store, key string, edit func([]byte) []byte) {
	t.Helper()
	name := filepath.Join(s.(*file.Store).Dir(), key)
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, newStore, storagetest.Corrupt(corrupt))
}

func TestConcurrentWritersLeaveOneWholeObject(t *testing.T) {
	s := newStore(t).(*file.Store)
	const writers, size = 8, 1 << 20
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if _, err := s.Put(t.Context(), "seg/x", storagetest.NewGen(size, uint64(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := storage.ReadAll(t.Context(), s, "seg/x")
	if err != nil || len(got) != size {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	whole := false
	for i := range writers {
		b, _ := io.ReadAll(storagetest.NewGen(size, uint64(i)))
		whole = whole || bytes.Equal(got, b)
	}
	if !whole {
		t.Fatal("the object is no writer's content")
	}
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), "seg"))
	if len(entries) != 1 {
		t.Fatalf("seg/ holds %d files, want the object alone (temp files left behind?)", len(entries))
	}
}

func TestLeftoverTempFilesAreInvisible(t *testing.T) {
	s := newStore(t).(*file.Store)
	put(t, s, "seg/1", "one")
	// What a crash between create and rename leaves behind.
	for _, name := range []string{".tmp 123456", "seg/.tmp 999", "seg/.tmp 42"} {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := s.List(t.Context(), "", func(i storage.ObjectInfo) error { keys = append(keys, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"seg/1"}) {
		t.Fatalf("List = %q, want [seg/1]", keys)
	}
	if got, err := storage.ReadAll(t.Context(), s, "seg/1"); err != nil || string(got) != "one" {
		t.Fatalf("seg/1 = %q, %v", got, err)
	}
}

func TestKeyAndDirectoryConflictIsClear(t *testing.T) {
	s := newStore(t)
	put(t, s, "a/b", "object")
	_, err := s.Put(t.Context(), "a/b/c", strings.NewReader("x"))
	if err == nil || !strings.Contains(err.Error(), "a/b is an object") {
		t.Errorf("Put a/b/c over object a/b: %v", err)
	}
	put(t, s, "x/y/z", "deep")
	for _, put := range []func(context.Context, string, io.Reader) (storage.ObjectInfo, error){s.Put, s.PutIfAbsent} {
		_, err = put(t.Context(), "x/y", strings.NewReader("x"))
		if err == nil || errors.Is(err, storage.ErrExists) || !strings.Contains(err.Error(), "directory of other keys") {
			t.Errorf("Put x/y over directory x/y: %v", err)
		}
	}
}

func TestDeleteRemovesEmptyDirectoriesButNotTheRoot(t *testing.T) {
	s := newStore(t).(*file.Store)
	put(t, s, "a/b/c/d", "1")
	put(t, s, "a/keep", "2")
	if err := s.Delete(t.Context(), "a/b/c/d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "a/b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a/b still there after deleting its only key: %v", err)
	}
	if err := s.Delete(t.Context(), "a/keep"); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(s.Dir()); err != nil || len(entries) != 0 {
		t.Errorf("root after deleting everything: %v, %v; want it empty and present", entries, err)
	}
}

func TestMissingRootIsAConfigError(t *testing.T) {
	root := filepath.Join(t.TempDir(), "not-mounted")
	s, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	_, putErr := s.Put(t.Context(), "k", strings.NewReader("x"))
	_, getErr := s.Get(t.Context(), "k")
	listErr := s.List(t.Context(), "", func(storage.ObjectInfo) error { return nil })
	for op, err := range map[string]error{"Check": s.Check(t.Context()), "Put": putErr, "Get": getErr, "List": listErr} {
		var ce *storage.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("%s: %v, want a *storage.ConfigError naming %s", op, err, root)
		}
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the store created its root: %v", err)
	}
	if _, err := file.New("relative/dir"); err == nil {
		t.Error("New accepted a relative directory")
	}
	if err := newStore(t).(*file.Store).Check(t.Context()); err != nil {
		t.Errorf("Check of a writable directory: %v", err)
	}
}

func put(t *testing.T, s storage.Store, key, content string) {
	t.Helper()
	if _, err := s.Put(t.Context(), key, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
}
