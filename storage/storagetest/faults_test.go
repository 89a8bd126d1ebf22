package storagetest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/storage/storagetest"
)

func newFaults(t *testing.T) *storagetest.Faults {
	inner, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return storagetest.NewFaults(inner)
}

// Without rules the wrapper is the store it wraps: the whole contract holds.
func TestFaultsWithoutRulesPassConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return newFaults(t) },
		storagetest.Corrupt(func(t *testing.T, s storage.Store, key string, edit func([]byte) []byte) {
			name := filepath.Join(s.(*storagetest.Faults).Inner().(*file.Store).Dir(), key)
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name, edit(b), 0o600); err != nil {
				t.Fatal(err)
			}
		}))
}

func TestFaultsFailNthCallOfOneOperationAndPrefix(t *testing.T) {
	f := newFaults(t)
	f.FailNth(storagetest.OpPut, "seg/", 2)
	for i, key := range []string{"seg/1", "cat/1", "seg/2", "seg/3"} {
		_, err := f.Put(t.Context(), key, strings.NewReader(key))
		if want := i == 2; (err != nil) != want {
			t.Fatalf("Put %s (call %d): %v; want a failure only for the 2nd Put under seg/", key, i+1, err)
		}
		if err != nil {
			var fe *storagetest.FaultError
			if !errors.Is(err, storagetest.ErrInjected) || !errors.As(err, &fe) || fe.Op != storagetest.OpPut || fe.Key != "seg/2" || fe.Lost {
				t.Errorf("error %#v (%q), want a FaultError for put seg/2", err, err)
			}
			if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrExists) {
				t.Errorf("an injected failure must not pass for a contract error: %v", err)
			}
		}
	}
	// The failed Put wrote nothing; the others did.
	if _, err := f.Inner().Stat(t.Context(), "seg/2"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("after a failed Put, seg/2: %v, want ErrNotFound", err)
	}
	if got := keys(t, f.Inner(), ""); !slices.Equal(got, []string{"cat/1", "seg/1", "seg/3"}) {
		t.Errorf("stored %q", got)
	}
	// Other operations are not affected, and every call is counted.
	if _, err := f.Get(t.Context(), "seg/1"); err != nil {
		t.Fatal(err)
	}
	if n, nf := f.Calls(storagetest.OpPut), f.Faulted(storagetest.OpPut); n != 4 || nf != 1 {
		t.Errorf("Calls(Put) = %d, Faulted(Put) = %d; want 4 and 1", n, nf)
	}
	if n := f.Calls(storagetest.OpAny); n != 5 {
		t.Errorf("Calls(Any) = %d, want 5", n)
	}
	h := f.History()
	if len(h) != 5 || h[2].Fault != "fail" || h[2].Key != "seg/2" || h[4].Op != storagetest.OpGet {
		t.Errorf("History = %v", h)
	}
}

func TestFaultsNthAndCountSelectAWindow(t *testing.T) {
	f := newFaults(t)
	f.Inject(storagetest.Rule{Op: storagetest.OpStat, Nth: 3, Count: 2})
	var failed []int
	for i := 1; i <= 6; i++ {
		if _, err := f.Stat(t.Context(), "k"); !errors.Is(err, storage.ErrNotFound) {
			failed = append(failed, i)
		}
	}
	if !slices.Equal(failed, []int{3, 4}) {
		t.Errorf("calls that failed: %v, want [3 4]", failed)
	}
}

// A lost reply is the case that tells a careful writer from a naive one:
// the object is there, a retry of PutIfAbsent meets ErrExists, and only
// the digest says it is the caller's own.
func TestFaultsLoseReplyCommitsThenFails(t *testing.T) {
	f := newFaults(t)
	f.LoseReplyNth(storagetest.OpPutIfAbsent, "", 1)
	_, err := f.PutIfAbsent(t.Context(), "seg/1", strings.NewReader("mine"))
	var fe *storagetest.FaultError
	if !errors.As(err, &fe) || !fe.Lost || !strings.Contains(err.Error(), "reply was lost") {
		t.Fatalf("PutIfAbsent with a lost reply: %v, want a FaultError with Lost", err)
	}
	if _, err := f.PutIfAbsent(t.Context(), "seg/1", strings.NewReader("mine")); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("retry after a lost reply: %v, want ErrExists", err)
	}
	st, err := f.Stat(t.Context(), "seg/1")
	if err != nil || st.SHA256 != storagetest.SHA256([]byte("mine")) {
		t.Fatalf("Stat = %+v, %v; want the first write's digest", st, err)
	}

	// Put, Delete: done; Get: the body is not handed over; List: fn sees nothing.
	f.Inject(storagetest.Rule{Op: storagetest.OpAny, Action: storagetest.LoseReply})
	if _, err := f.Put(t.Context(), "seg/2", strings.NewReader("two")); !errors.Is(err, storagetest.ErrInjected) {
		t.Errorf("Put: %v", err)
	}
	if err := f.Delete(t.Context(), "seg/1"); !errors.Is(err, storagetest.ErrInjected) {
		t.Errorf("Delete: %v", err)
	}
	if rc, err := f.Get(t.Context(), "seg/2"); rc != nil || !errors.Is(err, storagetest.ErrInjected) {
		t.Errorf("Get: %v, %v", rc, err)
	}
	seen := 0
	err = f.List(t.Context(), "seg/", func(storage.ObjectInfo) error { seen++; return nil })
	if seen != 0 || !errors.Is(err, storagetest.ErrInjected) {
		t.Errorf("List: fn saw %d keys, %v", seen, err)
	}
	// A call the store itself refuses reports the store's error.
	if _, err := f.Stat(t.Context(), "nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat of a missing key under LoseReply: %v, want ErrNotFound", err)
	}
	f.Clear()
	if got := keys(t, f, ""); !slices.Equal(got, []string{"seg/2"}) {
		t.Errorf("after lost replies the store holds %q, want [seg/2]", got)
	}
}

func TestFaultsOutageFailsEverythingUntilItEnds(t *testing.T) {
	f := newFaults(t)
	put(t, f, "a/1", "x")
	end := f.Outage()
	ctx := t.Context()
	_, perr := f.Put(ctx, "a/2", strings.NewReader("y"))
	_, pierr := f.PutIfAbsent(ctx, "a/3", strings.NewReader("y"))
	_, gerr := f.Get(ctx, "a/1")
	_, serr := f.Stat(ctx, "a/1")
	lerr := f.List(ctx, "", func(storage.ObjectInfo) error { return nil })
	laerr := storage.ListAfter(ctx, f, "a/", "a/0", func(storage.ObjectInfo) error { return nil })
	derr := f.Delete(ctx, "a/1")
	for i, err := range []error{perr, pierr, gerr, serr, lerr, laerr, derr} {
		if !errors.Is(err, storagetest.ErrInjected) {
			t.Errorf("call %d during the outage: %v", i, err)
		}
	}
	end()
	if got := keys(t, f, ""); !slices.Equal(got, []string{"a/1"}) {
		t.Fatalf("after the outage the store holds %q, want [a/1] untouched", got)
	}
	if n := f.Faulted(storagetest.OpAny); n != 7 {
		t.Errorf("Faulted = %d, want 7", n)
	}
	if n := f.Calls(storagetest.OpList); n != 3 {
		t.Errorf("Calls(List) = %d, want 3 (List, ListAfter, then keys)", n)
	}
}

func TestFaultsListMatchesOverlappingPrefixes(t *testing.T) {
	f := newFaults(t)
	f.Inject(storagetest.Rule{Op: storagetest.OpList, Prefix: "segments/"})
	for prefix, fails := range map[string]bool{"": true, "seg": true, "segments/": true, "segments/0001": true, "catalog/": false} {
		err := f.List(t.Context(), prefix, func(storage.ObjectInfo) error { return nil })
		if (err != nil) != fails {
			t.Errorf("List(%q): %v, want failure %v", prefix, err, fails)
		}
	}
}

func TestFaultsDelayWaitsAndEndsWithCtx(t *testing.T) {
	f := newFaults(t)
	put(t, f, "k", "v")
	end := f.Slow(storagetest.OpGet, "", 30*time.Millisecond)
	start := time.Now()
	if _, err := storage.ReadAll(t.Context(), f, "k"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("a delayed Get took %v", d)
	}
	if _, err := f.Stat(t.Context(), "k"); err != nil { // not delayed
		t.Fatal(err)
	}
	end()
	f.Slow(storagetest.OpAny, "", time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.Stat(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stat delayed beyond its ctx: %v", err)
	}
	if h := f.History(); h[len(h)-1].Fault != "delay" {
		t.Errorf("History = %v", h)
	}
}

func TestFaultsThenRunsWhenTheRuleActs(t *testing.T) {
	f := newFaults(t)
	ctx, crash := context.WithCancel(t.Context())
	// A crash right after the 2nd write reached the store.
	f.Inject(storagetest.Rule{Nth: 2, Count: 1, Action: storagetest.LoseReply, Then: crash})
	put(t, f, "a", "1")
	if _, err := f.Put(ctx, "b", strings.NewReader("2")); err == nil {
		t.Fatal("the 2nd Put succeeded")
	}
	if ctx.Err() == nil {
		t.Fatal("Then was not called")
	}
	if got := keys(t, f, ""); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("store holds %q, want [a b]", got)
	}
	custom := errors.New("503 slow down")
	f.Inject(storagetest.Rule{Op: storagetest.OpDelete, Err: custom})
	if err := f.Delete(t.Context(), "a"); err != custom {
		t.Errorf("Delete: %v, want the rule's own error", err)
	}
}

func TestFaultsProbIsReproducibleBySeed(t *testing.T) {
	run := func(seed uint64) []int {
		f := newFaults(t)
		f.Seed(seed)
		f.Inject(storagetest.Rule{Op: storagetest.OpStat, Prob: 0.3})
		var failed []int
		for i := range 200 {
			if _, err := f.Stat(t.Context(), "k"); errors.Is(err, storagetest.ErrInjected) {
				failed = append(failed, i)
			}
		}
		return failed
	}
	a, b := run(7), run(7)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different failures: %v vs %v", a, b)
	}
	if len(a) < 30 || len(a) > 90 {
		t.Errorf("%d of 200 calls failed with Prob 0.3", len(a))
	}
	if slices.Equal(a, run(8)) {
		t.Error("another seed gave the same failures")
	}
}

func TestFaultsConcurrentCallsCountExactly(t *testing.T) {
	f := newFaults(t)
	put(t, f, "k", "v")
	remove := f.Inject(storagetest.Rule{Op: storagetest.OpGet, Nth: 10, Count: 25})
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for range 8 {
		wg.Go(func() {
			for range 20 {
				_, err := storage.ReadAll(t.Context(), f, "k")
				if errors.Is(err, storagetest.ErrInjected) {
					mu.Lock()
					failed++
					mu.Unlock()
				} else if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	remove()
	if failed != 25 || f.Faulted(storagetest.OpGet) != 25 || f.Calls(storagetest.OpGet) != 160 {
		t.Errorf("%d failed, Faulted %d, Calls %d; want 25, 25, 160", failed, f.Faulted(storagetest.OpGet), f.Calls(storagetest.OpGet))
	}
}

func put(t *testing.T, s storage.Store, key, content string) {
	t.Helper()
	if _, err := s.Put(t.Context(), key, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
}

func keys(t *testing.T, s storage.Store, prefix string) []string {
	t.Helper()
	var k []string
	if err := s.List(t.Context(), prefix, func(oi storage.ObjectInfo) error { k = append(k, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	return k
}

// ReadPrefix (a ranged GET) is a Get to the rules and the counters.
func TestFaultsReadPrefixCountsAsGet(t *testing.T) {
	f := newFaults(t)
	put(t, f, "seg/1", "0123456789")
	f.FailNth(storagetest.OpGet, "seg/", 1)
	if _, err := storage.ReadPrefix(t.Context(), f, "seg/1", 4); !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("ReadPrefix under a Get fault: %v", err)
	}
	b, err := storage.ReadPrefix(t.Context(), f, "seg/1", 4)
	if err != nil || string(b) != "0123" {
		t.Fatalf("ReadPrefix = %q, %v", b, err)
	}
	if n := f.Calls(storagetest.OpGet); n != 2 {
		t.Errorf("Calls(Get) = %d, want 2", n)
	}
}
