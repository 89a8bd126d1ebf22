package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/binvault/binvault/storage"
)

// Option adapts the suite to a backend.
type Option func(*options)

type options struct {
	corrupt func(t *testing.T, s storage.Store, key string, edit func([]byte) []byte)
}

// Corrupt gives the suite a way to damage a stored object: fn must replace
// the stored bytes of key in s (content and trailer, as the backend keeps
// them) by edit's result. Without it the damage tests are skipped.
func Corrupt(fn func(t *testing.T, s storage.Store, key string, edit func(stored []byte) []byte)) Option {
	return func(o *options) { o.corrupt = fn }
}

// Big is the size of the object that must stream through in bounded memory,
// and MaxRSSGrowth the bound.
const (
	Big          = 200 << 20
	MaxRSSGrowth = 64 << 20
)

// Run runs the suite. newStore returns an empty store, private to the test.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store, opts ...Option) {
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Missing", testMissing},
		{"DeleteIdempotent", testDelete},
		{"Overwrite", testOverwrite},
		{"InvalidKeys", testInvalidKeys},
		{"KeyAlsoDirectory", testKeyAlsoDirectory},
		{"List", testList},
		{"PutIfAbsent", testPutIfAbsent},
		{"PutIfAbsentRace", testPutIfAbsentRace},
		{"ConcurrentPut", testConcurrentPut},
		{"FailedPutLeavesNothing", testFailedPut},
		{"Damage", func(t *testing.T, s storage.Store) { testDamage(t, s, o.corrupt) }},
		{"Big", testBig},
		{"ReadPrefix", testReadPrefix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func testRoundTrip(t *testing.T, s storage.Store) {
	for _, size := range []int{0, 1, 5 << 20} {
		key := fmt.Sprintf("rt/%d.bin", size)
		data := Random(int64(size), uint64(size))
		info, err := s.Put(ctx(t), key, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Put %d bytes: %v", size, err)
		}
		want := storage.ObjectInfo{Key: key, Size: int64(size), SHA256: SHA256(data)}
		if info.Key != want.Key || info.Size != want.Size || info.SHA256 != want.SHA256 {
			t.Errorf("Put returned %+v, want %+v", info, want)
		}
		got, err := storage.ReadAll(ctx(t), s, key)
		if err != nil {
			t.Fatalf("Get %s: %v", key, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("Get %s: %d bytes, SHA-256 %s; want %d bytes, %s", key, len(got), SHA256(got), size, want.SHA256)
		}
		st, err := s.Stat(ctx(t), key)
		if err != nil {
			t.Fatalf("Stat %s: %v", key, err)
		}
		if st.Key != key || st.Size != want.Size || st.SHA256 != want.SHA256 || st.ModTime.IsZero() {
			t.Errorf("Stat = %+v, want %+v and a ModTime", st, want)
		}
		if d := time.Since(st.ModTime); d < -time.Minute || d > time.Hour {
			t.Errorf("Stat ModTime %v is not about now", st.ModTime)
		}
		listed := list(t, s, key)
		if len(listed) != 1 || listed[0].Key != key || listed[0].Size != want.Size ||
			(listed[0].SHA256 != "" && listed[0].SHA256 != want.SHA256) {
			t.Errorf("List(%q) = %+v, want one entry like %+v", key, listed, want)
		}
	}
}

func testMissing(t *testing.T, s storage.Store) {
	for _, key := range []string{"nope", "no/such/key"} {
		if _, err := s.Get(ctx(t), key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Get %s: %v, want ErrNotFound", key, err)
		}
		if _, err := s.Stat(ctx(t), key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat %s: %v, want ErrNotFound", key, err)
		}
	}
	put(t, s, "dir/obj", []byte("x"))
	// A key that is only a directory of other keys is not an object.
	if _, err := s.Get(ctx(t), "dir"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get of a key prefix: %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx(t), "dir"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat of a key prefix: %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx(t), "dir/obj/below"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get below an object: %v, want ErrNotFound", err)
	}
}

// testReadPrefix reads the start of objects of several sizes: never the
// trailer's bytes, never more than asked, all of a short object.
func testReadPrefix(t *testing.T, s storage.Store) {
	sizes := []int64{0, 1, 47, 48, 49, 100, 70000}
	for _, size := range sizes {
		data := Random(size, uint64(size))
		key := fmt.Sprintf("prefix/%d", size)
		put(t, s, key, data)
		for _, n := range []int64{1, 5, 48, 64, 100, 1 << 20} {
			got, err := storage.ReadPrefix(ctx(t), s, key, n)
			if err != nil {
				t.Fatalf("ReadPrefix(%s, %d): %v", key, n, err)
			}
			want := data[:min(n, size)]
			if !bytes.Equal(got, want) {
				t.Fatalf("ReadPrefix(%s, %d) = %d bytes, want the first %d of the content", key, n, len(got), len(want))
			}
		}
	}
	if _, err := storage.ReadPrefix(ctx(t), s, "prefix/none", 10); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ReadPrefix of a missing key: %v, want ErrNotFound", err)
	}
}

func testDelete(t *testing.T, s storage.Store) {
	put(t, s, "d/a/b/c", []byte("one"))
	put(t, s, "d/keep", []byte("two"))
	for i := 0; i < 2; i++ {
		if err := s.Delete(ctx(t), "d/a/b/c"); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if err := s.Delete(ctx(t), "never/was"); err != nil {
		t.Fatalf("Delete of a key never written: %v", err)
	}
	if err := s.Delete(ctx(t), "d"); err != nil {
		t.Fatalf("Delete of a key prefix: %v", err)
	}
	if _, err := s.Get(ctx(t), "d/a/b/c"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"d/keep"}) {
		t.Errorf("List after Delete = %q, want [d/keep]", got)
	}
	// The key's former directories must not stand in the way of new keys.
	put(t, s, "d/a", []byte("three"))
}

func testOverwrite(t *testing.T, s storage.Store) {
	first := Random(3<<20, 1)
	second := []byte("shorter")
	put(t, s, "ow", first)
	put(t, s, "ow", second)
	got, err := storage.ReadAll(ctx(t), s, "ow")
	if err != nil || !bytes.Equal(got, second) {
		t.Fatalf("after overwrite: %d bytes, %v; want %q", len(got), err, second)
	}
	st, err := s.Stat(ctx(t), "ow")
	if err != nil || st.Size != int64(len(second)) || st.SHA256 != SHA256(second) {
		t.Fatalf("Stat after overwrite = %+v, %v", st, err)
	}
}

func testInvalidKeys(t *testing.T, s storage.Store) {
	for _, key := range []string{"", "/a", "a/", "a//b", ".", "..", "./a", "a/./b", "a/../b", "../x",
		"a b", "a\\b", "tab\tkey", "caf\u00e9", "nul\x00"} {
		if _, err := s.Put(ctx(t), key, strings.NewReader("x")); err == nil {
			t.Errorf("Put(%q) succeeded", key)
		}
		if _, err := s.PutIfAbsent(ctx(t), key, strings.NewReader("x")); err == nil {
			t.Errorf("PutIfAbsent(%q) succeeded", key)
		}
		if _, err := s.Get(ctx(t), key); err == nil || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want an invalid-key error", key, err)
		}
		if _, err := s.Stat(ctx(t), key); err == nil || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want an invalid-key error", key, err)
		}
		if err := s.Delete(ctx(t), key); err == nil {
			t.Errorf("Delete(%q) succeeded", key)
		}
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Errorf("invalid keys left objects: %+v", got)
	}
}

// testKeyAlsoDirectory: S3 can hold "a" next to "a/b", file systems can't
// (see storage.Store). Whichever a backend is, the attempt must not damage
// either object, nor pass for a lost PutIfAbsent race.
func testKeyAlsoDirectory(t *testing.T, s storage.Store) {
	put(t, s, "kd/a", []byte("object a"))
	put(t, s, "kd/c/d", []byte("object c/d"))
	for _, key := range []string{"kd/a/b", "kd/c"} {
		if _, err := s.PutIfAbsent(ctx(t), key, strings.NewReader("x")); errors.Is(err, storage.ErrExists) {
			t.Errorf("PutIfAbsent %s: %v; no object has that key", key, err)
		}
		s.Put(ctx(t), key, strings.NewReader("x"))
	}
	for key, want := range map[string]string{"kd/a": "object a", "kd/c/d": "object c/d"} {
		if got, err := storage.ReadAll(ctx(t), s, key); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", key, got, err, want)
		}
	}
}

func testList(t *testing.T, s storage.Store) {
	// Byte order of the whole key, which a directory walk sorting each
	// directory by name gets wrong: '-' < '.' < '/' < '0'.
	tricky := []string{"l/a-b", "l/a.b", "l/a/b", "l/a/b0/c", "l/a/c/d", "l/a0", "l/b"}
	var all []string
	for i := range 1003 {
		all = append(all, fmt.Sprintf("l/k/%04d", i))
	}
	all = append(all, tricky...)
	outside := []string{"k", "l-", "l0/x", "la"}
	putAll(t, s, append(slices.Clone(all), outside...))
	slices.Sort(all)

	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"l/", all},
		{"l", append(slices.Clone(all), "l-", "l0/x", "la")},
		{"l/a", []string{"l/a-b", "l/a.b", "l/a/b", "l/a/b0/c", "l/a/c/d", "l/a0"}},
		{"l/a/", []string{"l/a/b", "l/a/b0/c", "l/a/c/d"}},
		{"l/a/b", []string{"l/a/b", "l/a/b0/c"}},
		{"l/k/100", []string{"l/k/1000", "l/k/1001", "l/k/1002"}},
		{"l/nope/", nil},
		{"nope", nil},
		{"../", nil},
	} {
		slices.Sort(c.want)
		got := list(t, s, c.prefix)
		if !slices.Equal(keys(got), c.want) {
			t.Errorf("List(%q): got %d keys %s, want %d %s", c.prefix, len(got), short(keys(got)), len(c.want), short(c.want))
		}
		for _, info := range got {
			if info.Size != int64(len(info.Key)) {
				t.Errorf("List(%q): %s has size %d, want %d", c.prefix, info.Key, info.Size, len(info.Key))
				break
			}
		}
	}
	if n := len(list(t, s, "")); n != len(all)+len(outside) {
		t.Errorf(`List("") found %d keys, want %d`, n, len(all)+len(outside))
	}

	stop := errors.New("stop")
	n := 0
	err := s.List(ctx(t), "l/", func(storage.ObjectInfo) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("List with fn failing at the 3rd key: %v after %d calls, want %v after 3", err, n, stop)
	}

	// ListAfter (server-side on S3, filtered elsewhere) starts strictly after a key.
	for _, c := range []struct {
		prefix, after string
		want          []string
	}{
		{"l/k/", "l/k/0999", []string{"l/k/1000", "l/k/1001", "l/k/1002"}},
		{"l/a", "l/a.b", []string{"l/a/b", "l/a/b0/c", "l/a/c/d", "l/a0"}},
		{"l/", "", all},
		{"l/", "z", nil},
	} {
		var got []string
		if err := storage.ListAfter(ctx(t), s, c.prefix, c.after, func(oi storage.ObjectInfo) error {
			got = append(got, oi.Key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("ListAfter(%q, %q): got %s, want %s", c.prefix, c.after, short(got), short(c.want))
		}
	}
}

func testPutIfAbsent(t *testing.T, s storage.Store) {
	for _, size := range []int64{10, 9 << 20} { // a single PUT, and a multipart upload on S3
		key := fmt.Sprintf("pia/%d", size)
		first := Random(size, 1)
		info, err := s.PutIfAbsent(ctx(t), key, bytes.NewReader(first))
		if err != nil || info.SHA256 != SHA256(first) {
			t.Fatalf("first PutIfAbsent of %d bytes = %+v, %v", size, info, err)
		}
		_, err = s.PutIfAbsent(ctx(t), key, bytes.NewReader(Random(size, 2)))
		if !errors.Is(err, storage.ErrExists) {
			t.Fatalf("second PutIfAbsent of %d bytes: %v, want ErrExists", size, err)
		}
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not name the key %s", err, key)
		}
		if st, err := s.Stat(ctx(t), key); err != nil || st.SHA256 != SHA256(first) {
			t.Fatalf("after a losing PutIfAbsent, Stat = %+v, %v; want the first content", st, err)
		}
	}
}

func testPutIfAbsentRace(t *testing.T, s storage.Store) {
	for _, c := range []struct {
		writers int
		size    int64
	}{{8, 64 << 10}, {3, 9 << 20}} {
		key := fmt.Sprintf("race/%d", c.size)
		var wg sync.WaitGroup
		errs := make([]error, c.writers)
		start := make(chan struct{})
		for i := range c.writers {
			wg.Go(func() {
				<-start
				_, errs[i] = s.PutIfAbsent(ctx(t), key, bytes.NewReader(Random(c.size, uint64(i))))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("%d writers of %d bytes: both %d and %d won", c.writers, c.size, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, storage.ErrExists):
				t.Fatalf("%d writers of %d bytes: writer %d: %v, want nil or ErrExists", c.writers, c.size, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%d writers of %d bytes: nobody won", c.writers, c.size)
		}
		got, err := storage.ReadAll(ctx(t), s, key)
		if err != nil || !bytes.Equal(got, Random(c.size, uint64(winner))) {
			t.Fatalf("content after the race is not the winner's (%d): %v", winner, err)
		}
	}
}

// testConcurrentPut overwrites one key from several writers while readers
// read it: every read is whole (its digest verifies) and is one writer's.
func testConcurrentPut(t *testing.T, s storage.Store) {
	const writers, size = 6, 256 << 10
	want := map[string]bool{}
	for i := range writers {
		want[SHA256(Random(size, uint64(i)))] = true
	}
	put(t, s, "cp", Random(size, 0))
	var wg sync.WaitGroup
	var done atomic.Bool
	for i := range writers {
		wg.Go(func() {
			for range 4 {
				if _, err := s.Put(ctx(t), "cp", bytes.NewReader(Random(size, uint64(i)))); err != nil {
					t.Errorf("writer %d: %v", i, err)
					return
				}
			}
		})
	}
	var reads atomic.Int64
	var rg sync.WaitGroup
	for range 2 {
		rg.Go(func() {
			for !done.Load() {
				got, err := storage.ReadAll(ctx(t), s, "cp")
				if err != nil {
					t.Errorf("read during writes: %v", err)
					return
				}
				if !want[SHA256(got)] {
					t.Errorf("read during writes: %d bytes that no writer wrote", len(got))
					return
				}
				reads.Add(1)
			}
		})
	}
	wg.Wait()
	done.Store(true)
	rg.Wait()
	if st, err := s.Stat(ctx(t), "cp"); err != nil || !want[st.SHA256] || st.Size != size {
		t.Fatalf("after concurrent writes, Stat = %+v, %v", st, err)
	}
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"cp"}) {
		t.Fatalf("after concurrent writes, List = %q, want [cp]", got)
	}
	t.Logf("%d whole reads during %d overwrites", reads.Load(), writers*4)
}

// testFailedPut: a writer whose input fails, or whose ctx ends, midway leaves
// no object, or the old one untouched, on both the single-request and the
// multipart path.
func testFailedPut(t *testing.T, s storage.Store) {
	old := []byte("the old content")
	put(t, s, "fail/existing", old)
	for _, size := range []int64{1 << 20, 20 << 20} {
		for _, key := range []string{"fail/new", "fail/existing"} {
			boom := errors.New("input broke")
			r := io.MultiReader(io.LimitReader(NewGen(size, 7), size/2+3), errReader{boom})
			if _, err := s.Put(ctx(t), key, r); !errors.Is(err, boom) {
				t.Errorf("Put %s with input failing after %d bytes: %v, want %v", key, size/2, err, boom)
			}
			c, cancel := context.WithCancel(ctx(t))
			r = io.MultiReader(io.LimitReader(NewGen(size, 7), size/2), cancelReader{cancel}, NewGen(size, 8))
			if _, err := s.PutIfAbsent(c, key, r); err == nil {
				t.Errorf("PutIfAbsent %s with ctx ending after %d bytes succeeded", key, size/2)
			}
		}
		if _, err := s.Stat(ctx(t), "fail/new"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("after failed puts of %d bytes, Stat(fail/new) = %v, want ErrNotFound", size, err)
		}
		if got, err := storage.ReadAll(ctx(t), s, "fail/existing"); err != nil || !bytes.Equal(got, old) {
			t.Errorf("after failed puts of %d bytes, fail/existing = %q, %v; want the old content", size, got, err)
		}
	}
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"fail/existing"}) {
		t.Errorf("after failed puts, List = %q", got)
	}
}

func testDamage(t *testing.T, s storage.Store, corrupt func(*testing.T, storage.Store, string, func([]byte) []byte)) {
	if corrupt == nil {
		t.Skip("the backend's test gave no storagetest.Corrupt hook")
	}
	data := Random(100<<10, 3)
	for _, c := range []struct {
		name   string
		edit   func([]byte) []byte
		stat   bool // Stat notices too: the trailer itself is damaged
		reason bool // the trailer is unreadable, so Want is empty
	}{
		{"content bit", func(b []byte) []byte { b[len(b)/3] ^= 0x10; return b }, false, false},
		{"digest bit", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, false, false},
		{"trailer magic", func(b []byte) []byte { b[len(b)-storage.TrailerSize] ^= 1; return b }, true, true},
		{"truncated", func(b []byte) []byte { return b[:len(b)-5] }, true, true},
		{"extended", func(b []byte) []byte { return append(b, 0) }, true, true},
		{"shorter than a trailer", func(b []byte) []byte { return b[:10] }, true, true},
		{"empty", func(b []byte) []byte { return b[:0] }, true, true},
	} {
		key := "dmg/" + strings.ReplaceAll(c.name, " ", "-")
		put(t, s, key, data)
		corrupt(t, s, key, c.edit)
		_, err := storage.ReadAll(ctx(t), s, key)
		var ce *storage.ChecksumError
		if !errors.As(err, &ce) {
			t.Errorf("%s: Get: %v, want a *storage.ChecksumError", c.name, err)
			continue
		}
		if ce.Key != key || (ce.Want == "") != c.reason || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: Get: %#v (%q)", c.name, ce, err)
		}
		_, err = s.Stat(ctx(t), key)
		if c.stat && !storage.IsChecksum(err) {
			t.Errorf("%s: Stat: %v, want a *storage.ChecksumError", c.name, err)
		}
		if !c.stat && err != nil {
			t.Errorf("%s: Stat: %v", c.name, err)
		}
		if got := list(t, s, key); len(got) != 1 {
			t.Errorf("%s: List must still show a damaged object, for verify to report: %+v", c.name, got)
		}
	}
}

// testBig streams an object far larger than the memory it may use through
// Put and Get, measuring the peak resident set of the whole process.
func testBig(t *testing.T, s storage.Store) {
	if testing.Short() {
		t.Skip("-short: skipping the 200 MiB round trip")
	}
	m := startRSS(t)
	in := sha256.New()
	start := time.Now()
	info, err := s.Put(ctx(t), "big", io.TeeReader(NewGen(Big, 42), in))
	if err != nil {
		t.Fatalf("Put 200 MiB: %v", err)
	}
	put := time.Since(start)
	want := hex.EncodeToString(in.Sum(nil))
	if info.Size != Big || info.SHA256 != want {
		t.Fatalf("Put returned %+v, want %d bytes, %s", info, Big, want)
	}
	rc, err := s.Get(ctx(t), "big")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	out := sha256.New()
	n, err := io.Copy(out, rc)
	rc.Close()
	if err != nil || n != Big || hex.EncodeToString(out.Sum(nil)) != want {
		t.Fatalf("Get: %d bytes, %v", n, err)
	}
	base, peak := m.stop()
	growth := peak - base
	t.Logf("200 MiB round trip: put %v, get %v; RSS %d MiB before, peak %d MiB, growth %d MiB (%s)",
		put.Round(time.Millisecond), (time.Since(start) - put).Round(time.Millisecond),
		base>>20, peak>>20, growth>>20, m.how)
	if growth > MaxRSSGrowth {
		if raceEnabled {
			t.Logf("above the %d MiB bound, but the race detector's shadow memory grows with the heap; not asserted under -race", MaxRSSGrowth>>20)
		} else {
			t.Errorf("RSS grew by %d MiB streaming 200 MiB, want under %d MiB", growth>>20, MaxRSSGrowth>>20)
		}
	}
	if st, err := s.Stat(ctx(t), "big"); err != nil || st.Size != Big || st.SHA256 != want {
		t.Errorf("Stat = %+v, %v", st, err)
	}
}

type rssMeter struct {
	base  int64
	how   string
	peak  atomic.Int64
	stopc chan struct{}
	wg    sync.WaitGroup
}

// startRSS measures from a collected heap. The kernel's high-water mark
// (VmHWM), reset through /proc/self/clear_refs, sees every peak; where that
// reset is refused, sampling VmRSS every 5ms stands in.
func startRSS(t *testing.T) *rssMeter {
	runtime.GC()
	debug.FreeOSMemory()
	m := &rssMeter{base: procStatus(t, "VmRSS")}
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err == nil {
		m.how = "VmHWM"
		return m
	}
	m.how = "VmRSS sampled every 5ms"
	m.stopc = make(chan struct{})
	m.wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if r := procStatus(t, "VmRSS"); r > m.peak.Load() {
				m.peak.Store(r)
			}
			select {
			case <-m.stopc:
				return
			case <-tick.C:
			}
		}
	})
	return m
}

func (m *rssMeter) stop() (base, peak int64) {
	if m.stopc == nil {
		return m.base, procStatus(nil, "VmHWM")
	}
	close(m.stopc)
	m.wg.Wait()
	return m.base, m.peak.Load()
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		if t != nil {
			t.Skipf("no /proc/self/status to measure memory: %v", err)
		}
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// NewGen returns a deterministic stream of n bytes: a random 64 KiB block,
// each copy stamped with its index so that a reordered, repeated or dropped
// block changes the digest. It costs no memory beyond the block.
func NewGen(n int64, seed uint64) io.Reader {
	g := &gen{n: n, block: Random(64<<10, seed)}
	return g
}

type gen struct {
	n, off int64
	block  []byte
}

func (g *gen) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	bs := int64(len(g.block))
	i, within := g.off/bs, g.off%bs
	binary.LittleEndian.PutUint64(g.block, uint64(i))
	n := copy(p, g.block[within:min(bs, within+g.n-g.off)])
	g.off += int64(n)
	return n, nil
}

// Random returns n deterministic pseudo-random bytes.
func Random(n int64, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 0x5e})
	r.Read(b)
	return b
}

// SHA256 is the hex digest of b.
func SHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// cancelReader ends a ctx at a point in a stream.
type cancelReader struct{ cancel func() }

func (r cancelReader) Read([]byte) (int, error) { r.cancel(); return 0, io.EOF }

func ctx(t *testing.T) context.Context { return t.Context() }

func put(t *testing.T, s storage.Store, key string, data []byte) {
	t.Helper()
	if _, err := s.Put(ctx(t), key, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put %s: %v", key, err)
	}
}

// putAll writes small objects whose content is their key, eight at a time.
func putAll(t *testing.T, s storage.Store, keys []string) {
	t.Helper()
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for k := range work {
				if _, err := s.Put(ctx(t), k, strings.NewReader(k)); err != nil {
					t.Errorf("Put %s: %v", k, err)
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

func list(t *testing.T, s storage.Store, prefix string) []storage.ObjectInfo {
	t.Helper()
	var got []storage.ObjectInfo
	if err := s.List(ctx(t), prefix, func(i storage.ObjectInfo) error { got = append(got, i); return nil }); err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func keys(infos []storage.ObjectInfo) []string {
	var k []string
	for _, i := range infos {
		k = append(k, i.Key)
	}
	return k
}

func short(k []string) string {
	if len(k) > 12 {
		return fmt.Sprintf("%q … %q", k[:6], k[len(k)-6:])
	}
	return fmt.Sprintf("%q", k)
}
