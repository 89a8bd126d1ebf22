package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/binvault/binvault/storage"
)

// Two backups of one source never run at once: each first creates the lock
// object with PutIfAbsent, which exactly one concurrent caller wins, and
// deletes it at the end. The holder rewrites it every lockRenewEvery so
// that a crashed holder can be told from a slow one: a lock is stale when
// it was not renewed for lockStaleAfter, or at once when it names a
// process of this same machine (host name and boot id) that no longer
// runs. Breaking a stale lock first creates a marker object named after
// the stale lock's token, again with PutIfAbsent, so that of several
// processes that saw the same stale lock only one breaks it; the others
// re-read the lock and find the winner's.
const (
	LockKey         = Prefix + "lock.json"
	lockBreakPrefix = Prefix + "lock-broken-"
	lockRenewEvery  = time.Minute
	lockStaleAfter  = 10 * time.Minute
)

// lockInfo is the lock object's content.
type lockInfo struct {
	Token    string    `json:"token"`
	BackupID string    `json:"backup_id"`
	Kind     string    `json:"kind,omitempty"` // what the holder does: "backup" (also when absent) or "prune"
	Host     string    `json:"host"`
	BootID   string    `json:"boot_id,omitempty"`
	PID      int       `json:"pid"`
	PIDStart uint64    `json:"pid_start,omitempty"` // /proc/<pid>/stat start time, against pid reuse
	Started  time.Time `json:"started"`
	Renewed  time.Time `json:"renewed"`
}

// What a lock holder does (lockInfo.Kind).
const (
	lockBackup = "backup"
	lockPrune  = "prune"
)

// LockedError says another backup (or a prune) holds the lock.
type LockedError struct {
	Holder lockInfo
}

func (e *LockedError) Error() string {
	h := e.Holder
	what := "another backup is running for this source: backup " + h.BackupID
	if h.Kind == lockPrune {
		what = "a prune (retention) is running for this source"
	}
	return fmt.Sprintf("%s on host %s (pid %d), started %s, lock renewed %s; wait for it to finish (a lock not renewed for %s is taken over)",
		what, h.Host, h.PID, h.Started.UTC().Format(time.RFC3339), h.Renewed.UTC().Format(time.RFC3339), lockStaleAfter)
}

// heldLock is a lock this process holds.
type heldLock struct {
	st   storage.Store
	log  *slog.Logger
	mu   sync.Mutex
	info lockInfo
	// lost is closed when the lock was taken over or could not be renewed
	// for too long: the backup must stop.
	lost     chan struct{}
	lostErr  error
	stop     chan struct{}
	stopped  chan struct{}
	lastGood time.Time
}

func self(kind, backupID string, now time.Time) lockInfo {
	var tok [12]byte
	rand.Read(tok[:])
	host, _ := os.Hostname()
	pid := os.Getpid()
	start, _ := processStart(pid)
	return lockInfo{Token: hex.EncodeToString(tok[:]), BackupID: backupID, Kind: kind, Host: host, BootID: bootID(),
		PID: pid, PIDStart: start, Started: now.UTC(), Renewed: now.UTC()}
}

// acquireLock takes the backup lock for a backup or returns a *LockedError.
func acquireLock(ctx context.Context, st storage.Store, backupID string, log *slog.Logger) (*heldLock, error) {
	return acquireLockAs(ctx, st, lockBackup, backupID, log)
}

// acquireLockAs takes the lock for kind (lockBackup, lockPrune).
func acquireLockAs(ctx context.Context, st storage.Store, kind, backupID string, log *slog.Logger) (*heldLock, error) {
	me := self(kind, backupID, time.Now())
	pause := 20 * time.Millisecond
	for attempt := 0; attempt < 10; attempt++ {
		body, _ := json.Marshal(me)
		_, err := st.PutIfAbsent(ctx, LockKey, bytes.NewReader(body))
		if err == nil {
			return holdLock(st, log, me), nil
		}
		if !errors.Is(err, storage.ErrExists) {
			return nil, fmt.Errorf("take the backup lock %s: %w", LockKey, err)
		}
		holder, err := readLock(ctx, st)
		if errors.Is(err, storage.ErrNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read the backup lock %s: %w", LockKey, err)
		}
		if holder.Token == me.Token {
			// Our own PutIfAbsent succeeded unseen (an S3 retry).
			return holdLock(st, log, me), nil
		}
		stale, why := isStale(holder, time.Now())
		if !stale {
			return nil, &LockedError{Holder: holder}
		}
		marker := lockBreakPrefix + holder.Token + ".json"
		if _, err := st.PutIfAbsent(ctx, marker, bytes.NewReader(body)); err != nil {
			if !errors.Is(err, storage.ErrExists) {
				return nil, fmt.Errorf("break the stale backup lock: %w", err)
			}
			// Another process is breaking it: look again shortly. A marker
			// as old as a stale lock belongs to a breaker that died midway.
			if oi, serr := st.Stat(ctx, marker); serr == nil && !oi.ModTime.IsZero() && time.Since(oi.ModTime) > lockStaleAfter {
				st.Delete(ctx, marker)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(pause):
			}
			pause *= 2
			continue
		}
		log.Warn("taking over a stale backup lock", "holder_backup", holder.BackupID, "holder_host", holder.Host, "holder_pid", holder.PID, "why", why)
		// Delete only the lock judged stale, never one created since.
		if cur, err := readLock(ctx, st); err == nil && cur.Token == holder.Token {
			if err := st.Delete(ctx, LockKey); err != nil {
				return nil, fmt.Errorf("break the stale backup lock: %w", err)
			}
		}
	}
	return nil, errors.New("could not take the backup lock: it changed hands repeatedly; try again")
}

// holdLock starts renewing a lock just taken.
func holdLock(st storage.Store, log *slog.Logger, me lockInfo) *heldLock {
	l := &heldLock{st: st, log: log, info: me, lost: make(chan struct{}), stop: make(chan struct{}), stopped: make(chan struct{}), lastGood: time.Now()}
	go l.renewLoop()
	return l
}

func readLock(ctx context.Context, st storage.Store) (lockInfo, error) {
	var li lockInfo
	b, err := storage.ReadAll(ctx, st, LockKey)
	if err != nil {
		return li, err
	}
	if err := json.Unmarshal(b, &li); err != nil {
		// An unreadable lock cannot name a live holder; treat it as
		// renewed at its write time, found by Stat.
		oi, serr := st.Stat(ctx, LockKey)
		if serr != nil {
			return li, serr
		}
		return lockInfo{Token: "unreadable-" + oi.SHA256, Renewed: oi.ModTime, Started: oi.ModTime}, nil
	}
	return li, nil
}

// isStale applies the staleness rule.
func isStale(h lockInfo, now time.Time) (bool, string) {
	if age := now.Sub(h.Renewed); age > lockStaleAfter {
		return true, fmt.Sprintf("not renewed for %s", age.Round(time.Second))
	}
	host, _ := os.Hostname()
	if h.Host != "" && h.Host == host && h.BootID != "" && h.BootID == bootID() {
		start, err := processStart(h.PID)
		switch {
		case err != nil:
			return true, fmt.Sprintf("process %d on this host is gone", h.PID)
		case h.PIDStart != 0 && start != h.PIDStart:
			return true, fmt.Sprintf("process %d on this host is another process now", h.PID)
		}
	}
	return false, ""
}

func (l *heldLock) renewLoop() {
	defer close(l.stopped)
	t := time.NewTicker(lockRenewEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if err := l.renew(); err != nil {
			l.log.Warn("renewing the backup lock failed", "err", err)
			if errors.Is(err, errLockLost) || time.Since(l.lastGood) > lockStaleAfter/2 {
				// Others may take the lock over soon: stop before two
				// backups could run at once.
				l.mu.Lock()
				l.lostErr = err
				l.mu.Unlock()
				close(l.lost)
				return
			}
		}
	}
}

var errLockLost = errors.New("the backup lock was taken over by another process")

func (l *heldLock) renew() error {
	ctx, cancel := context.WithTimeout(context.Background(), lockRenewEvery)
	defer cancel()
	cur, err := readLock(ctx, l.st)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return errLockLost
		}
		return err
	}
	if cur.Token != l.info.Token {
		return errLockLost
	}
	l.info.Renewed = time.Now().UTC()
	body, _ := json.Marshal(l.info)
	if _, err := l.st.Put(ctx, LockKey, bytes.NewReader(body)); err != nil {
		return err
	}
	l.lastGood = time.Now()
	return nil
}

// Lost is closed when the lock can no longer be relied on.
func (l *heldLock) Lost() <-chan struct{} { return l.lost }

// guard ties work to the lock: the returned context ends when the lock is
// lost, and done releases the lock and, when the work failed (*errp set)
// because the lock was lost, says so in *errp. Call done with defer.
func (l *heldLock) guard(ctx context.Context, log *slog.Logger, errp *error) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-l.Lost():
			cancel(fmt.Errorf("backup lock lost: %w", l.Err()))
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		if rerr := l.release(rctx); rerr != nil {
			log.Warn("releasing the backup lock failed; the next backup or prune takes it over once stale", "err", rerr)
		}
		if cause := context.Cause(ctx); *errp != nil && cause != nil && !errors.Is(cause, context.Canceled) {
			*errp = fmt.Errorf("%w (%v)", *errp, cause)
		}
		cancel(nil)
	}
}

func (l *heldLock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

// release stops renewing and deletes the lock if it is still ours.
func (l *heldLock) release(ctx context.Context) error {
	close(l.stop)
	<-l.stopped
	cur, err := readLock(ctx, l.st)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		return err
	}
	if cur.Token != l.info.Token {
		return nil
	}
	return l.st.Delete(ctx, LockKey)
}

// cleanLockMarkers deletes break markers older than a day: by then no
// process can still act on the stale lock they name.
func cleanLockMarkers(ctx context.Context, st storage.Store) error {
	var old []string
	err := st.List(ctx, lockBreakPrefix, func(oi storage.ObjectInfo) error {
		if !oi.ModTime.IsZero() && time.Since(oi.ModTime) > 24*time.Hour {
			old = append(old, oi.Key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range old {
		if err := st.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// processStart returns the start time of pid (field 22 of /proc/pid/stat),
// or an error when no such process runs.
func processStart(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, errors.New("no pid")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// Without /proc, fall back to signal 0: it tells alive from gone.
		if kerr := syscall.Kill(pid, 0); kerr == nil || errors.Is(kerr, syscall.EPERM) {
			return 0, nil
		}
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, nil
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, nil
	}
	// f[0] is field 3 (state); a zombie has exited.
	if f[0] == "Z" {
		return 0, errors.New("zombie")
	}
	return strconv.ParseUint(f[19], 10, 64)
}
