package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
)

func putLock(t *testing.T, st storage.Store, li lockInfo) {
	t.Helper()
	b, _ := json.Marshal(li)
	if _, err := st.Put(context.Background(), LockKey, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

func newStore(t *testing.T) storage.Store {
	t.Helper()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestLockRefusesALiveHolderAndTakesOverStaleOnes(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	host, _ := os.Hostname()
	// A process that has exited: its pid names nothing (or something else).
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		lock  lockInfo
		taken bool
	}{
		{"renewed elsewhere just now", lockInfo{Token: "a", Host: "other-host", PID: 1, Renewed: time.Now()}, false},
		{"this process's own live sibling", lockInfo{Token: "b", Host: host, BootID: bootID(), PID: os.Getpid(), PIDStart: mustStart(t), Renewed: time.Now()}, false},
		{"not renewed for 11 minutes", lockInfo{Token: "c", Host: "other-host", PID: 1, Renewed: time.Now().Add(-11 * time.Minute)}, true},
		{"a dead process on this host", lockInfo{Token: "d", Host: host, BootID: bootID(), PID: dead.Process.Pid, Renewed: time.Now()}, true},
		{"a reused pid on this host", lockInfo{Token: "e", Host: host, BootID: bootID(), PID: os.Getpid(), PIDStart: mustStart(t) + 1, Renewed: time.Now()}, true},
		{"same host name, another boot", lockInfo{Token: "f", Host: host, BootID: "another-boot", PID: dead.Process.Pid, Renewed: time.Now()}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := newStore(t)
			putLock(t, st, c.lock)
			l, err := acquireLock(ctx, st, "20261128T101500Z-abcdef", log)
			var le *LockedError
			switch {
			case c.taken && err != nil:
				t.Fatalf("stale lock not taken over: %v", err)
			case !c.taken && !errors.As(err, &le):
				t.Fatalf("want a LockedError, got %v", err)
			case c.taken:
				if _, err := st.Stat(ctx, lockBreakPrefix+c.lock.Token+".json"); err != nil {
					t.Errorf("no break marker: %v", err)
				}
				if err := l.release(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Stat(ctx, LockKey); !errors.Is(err, storage.ErrNotFound) {
					t.Errorf("lock not released: %v", err)
				}
			}
		})
	}
}

func mustStart(t *testing.T) uint64 {
	t.Helper()
	s, err := processStart(os.Getpid())
	if err != nil || s == 0 {
		t.Skipf("no /proc start time here: %v", err)
	}
	return s
}

// Of several processes that find the same stale lock, one takes it over;
// the others then see the winner's fresh lock.
func TestLockTakeoverHasOneWinner(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	for round := 0; round < 20; round++ {
		st := newStore(t)
		putLock(t, st, lockInfo{Token: "stale", Host: "gone", Renewed: time.Now().Add(-time.Hour)})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []*heldLock
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := acquireLock(ctx, st, "20261128T101500Z-abcdef", log)
				var le *LockedError
				if err != nil && !errors.As(err, &le) {
					t.Error(err)
				}
				if err == nil {
					mu.Lock()
					won = append(won, l)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("round %d: %d processes hold the lock", round, len(won))
		}
		won[0].release(ctx)
	}
}

// A holder whose lock was replaced learns it at the next renewal.
func TestRenewNoticesATakeover(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	l, err := acquireLock(ctx, st, "20261128T101500Z-abcdef", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.renew(); err != nil {
		t.Fatalf("renewing our own lock: %v", err)
	}
	putLock(t, st, lockInfo{Token: "someone-else", Renewed: time.Now()})
	if err := l.renew(); !errors.Is(err, errLockLost) {
		t.Fatalf("renew after a takeover: %v", err)
	}
	if err := l.release(ctx); err != nil {
		t.Fatal(err)
	}
	if li, err := readLock(ctx, st); err != nil || li.Token != "someone-else" {
		t.Errorf("release deleted another holder's lock: %+v %v", li, err)
	}
}
