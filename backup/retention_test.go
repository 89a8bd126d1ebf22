package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
)

var now0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func bk(id string, age time.Duration, pos string) *Manifest {
	return &Manifest{Format: FormatVersion, ID: id, Complete: true, Source: archive.Source{Flavor: "mariadb"},
		SnapshotTime: now0.Add(-age), Position: binlog.Position{GTIDSet: pos}}
}

func TestSelectBackups(t *testing.T) {
	day := 24 * time.Hour
	five := []*Manifest{bk("a", 5*day, ""), bk("b", 4*day, ""), bk("c", 3*day, ""), bk("d", 2*day, ""), bk("e", time.Hour, "")}
	cases := []struct {
		name   string
		ms     []*Manifest
		policy Policy
		keep   string // ids kept, oldest first
	}{
		{"keep_last only", five, Policy{KeepLast: 2}, "de"},
		{"keep_within adds younger ones", five, Policy{KeepLast: 1, KeepWithin: 50 * time.Hour}, "de"},
		{"keep_within covers all", five, Policy{KeepLast: 1, KeepWithin: 168 * time.Hour}, "abcde"},
		{"keep_last covers all", five, Policy{KeepLast: 9}, "abcde"},
		{"keep_within shorter than every age keeps the newest", five, Policy{KeepLast: 1, KeepWithin: time.Minute}, "e"},
		{"either rule keeps", five, Policy{KeepLast: 3, KeepWithin: 100 * time.Hour}, "bcde"},
		{"age exactly keep_within goes", five, Policy{KeepLast: 1, KeepWithin: 48 * time.Hour}, "e"},
		{"one backup", five[:1], Policy{KeepLast: 1}, "a"},
		{"no backups", nil, Policy{KeepLast: 1, KeepWithin: time.Hour}, ""},
		// Snapshot time decides, not the order given.
		{"unordered input", []*Manifest{five[4], five[0], five[2]}, Policy{KeepLast: 2}, "ce"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds := selectBackups(c.ms, c.policy, now0)
			var keep string
			for i, d := range ds {
				if i > 0 && ds[i-1].m.SnapshotTime.After(d.m.SnapshotTime) {
					t.Errorf("not oldest first: %s before %s", ds[i-1].m.ID, d.m.ID)
				}
				if d.keep {
					keep += d.m.ID
					if len(d.reasons) == 0 {
						t.Errorf("%s kept without a reason", d.m.ID)
					}
				} else if d.why == "" {
					t.Errorf("%s deleted without a reason", d.m.ID)
				}
			}
			if keep != c.keep {
				t.Errorf("kept %q, want %q", keep, c.keep)
			}
			if n := len(ds); n > 0 && (!ds[n-1].keep || !strings.Contains(strings.Join(ds[n-1].reasons, ";"), "newest backup")) {
				t.Errorf("the newest backup is not kept as such: %+v", ds[n-1])
			}
		})
	}
}

// seg i holds GTIDs 0-1-(100+10(i-1)+1) .. 0-1-(100+10i).
func mkSeg(i uint64) archive.Segment {
	return archive.Segment{Format: archive.FormatVersion, Seq: i, Source: archive.Source{Flavor: "mariadb"},
		Start: binlog.Position{GTIDSet: fmt.Sprintf("0-1-%d", 100+10*(i-1))}, End: binlog.Position{GTIDSet: fmt.Sprintf("0-1-%d", 100+10*i)},
		FirstGTID: fmt.Sprintf("0-1-%d", 100+10*(i-1)+1), LastGTID: fmt.Sprintf("0-1-%d", 100+10*i),
		FirstTime: now0.Add(time.Duration(i) * time.Minute), LastTime: now0.Add(time.Duration(i)*time.Minute + 30*time.Second),
		Txns: 10, Key: archive.SegmentKey(i), StoredBytes: 100}
}

func segsN(from, to uint64) []archive.Segment {
	var out []archive.Segment
	for i := from; i <= to; i++ {
		out = append(out, mkSeg(i))
	}
	return out
}

func TestPrunableSegments(t *testing.T) {
	six := segsN(1, 6) // ends at 0-1-110 .. 0-1-160
	cases := []struct {
		name    string
		segs    []archive.Segment
		kept    []*Manifest
		protect map[string]string
		n       int
		why     string
	}{
		{"inside a segment", six, []*Manifest{bk("x", 0, "0-1-135")}, nil, 3, "segment 4 holds transactions after the position of backup x"},
		{"on a segment's end", six, []*Manifest{bk("x", 0, "0-1-130")}, nil, 3, "segment 4"},
		{"the oldest kept backup decides", six, []*Manifest{bk("x", 0, "0-1-115"), bk("y", 0, "0-1-155")}, nil, 1, "backup x"},
		{"before the archive", six, []*Manifest{bk("x", 0, "0-1-50")}, nil, 0, "segment 1"},
		{"at the archive's end: the newest stays", six, []*Manifest{bk("x", 0, "0-1-160")}, nil, 5, "segment 6 is the newest"},
		{"past the archive's end", six, []*Manifest{bk("x", 0, "0-1-999")}, nil, 5, "newest"},
		{"no backup, nothing goes", six, nil, nil, 0, "no backup"},
		{"empty archive", nil, []*Manifest{bk("x", 0, "0-1-135")}, nil, 0, "no segments"},
		{"a protected position holds history back", six, []*Manifest{bk("x", 0, "0-1-135")}, map[string]string{"replica": "0-1-125"}, 2, "the replica position"},
		{"another domain not in the backup", []archive.Segment{seg(1, "0-1-1", "0-1-5,1-2-3"), seg(2, "0-1-5,1-2-3", "0-1-9,1-2-3")},
			[]*Manifest{bk("x", 0, "0-1-9")}, nil, 0, "segment 1"},
		{"other flavor", segsN(1, 3), []*Manifest{{ID: "m", Source: archive.Source{Flavor: "mysql"}, Position: binlog.Position{GTIDSet: "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"}}}, nil, 0, "segment 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i := range c.segs {
				c.segs[i].Source.Flavor = "mariadb"
			}
			n, why, err := prunableSegments(c.segs, c.kept, c.protect)
			if err != nil {
				t.Fatal(err)
			}
			if n != c.n || !strings.Contains(why, c.why) {
				t.Errorf("n=%d why=%q, want %d and %q", n, why, c.n, c.why)
			}
			// Whatever stays rolls every kept backup forward.
			for _, m := range c.kept {
				before := Chain(m, c.segs)
				if after := Chain(m, c.segs[n:]); before.Complete && !after.Complete {
					t.Errorf("pruning %d segments breaks backup %s's chain: %s", n, m.ID, after.Detail)
				}
			}
		})
	}
}

// A test archive in a file store: segments 1..60 (catalogued up to 50: an
// L2 object [1..10] with its merged L1 leftovers, L1 objects of 5 after it,
// a tail of 10), and three backups. keep_last 2 keeps B2 (at GTID 325,
// inside segment 23) and B3: segments 1..22 and B1 go, and the catalog
// object [21..25] straddles the floor.
const (
	b1 = "20261101T000000Z-00000a"
	b2 = "20261110T000000Z-00000b"
	b3 = "20261120T000000Z-00000c"
)

func buildArchive(t testing.TB, st storage.Store) {
	t.Helper()
	ctx := context.Background()
	for _, s := range segsN(1, 60) {
		if _, err := st.Put(ctx, s.Key, strings.NewReader(strings.Repeat("s", 100))); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(s)
		if _, err := st.Put(ctx, archive.ManifestKey(s.Seq), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	cat := func(level int, from, to uint64) {
		if _, err := archive.WriteCatalog(ctx, st, level, segsN(from, to)); err != nil {
			t.Fatal(err)
		}
	}
	cat(2, 1, 10)
	cat(1, 1, 5)
	cat(1, 6, 10)
	for f := uint64(11); f <= 46; f += 5 {
		cat(1, f, f+4)
	}
	for i, b := range []struct {
		id  string
		pos string
	}{{b1, "0-1-150"}, {b2, "0-1-325"}, {b3, "0-1-545"}} {
		m := bk(b.id, time.Duration(30-10*i)*24*time.Hour, b.pos)
		m.Schema = Object{Key: SchemaKey(b.id), StoredBytes: 10}
		m.StoredBytes = 30
		m.Tables = []Table{{Database: "d", Name: "t", Objects: []Object{{Key: dataKey(b.id, 0, 1, "d", "t"), StoredBytes: 10}, {Key: dataKey(b.id, 0, 2, "d", "t"), StoredBytes: 10}}}}
		for _, o := range m.Objects() {
			if _, err := st.Put(ctx, o.Key, strings.NewReader("0123456789")); err != nil {
				t.Fatal(err)
			}
		}
		body, _ := encodeJSON(m)
		if _, err := st.Put(ctx, ManifestKey(b.id), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
}

var testPolicy = Policy{KeepLast: 2}

// checkReadable checks what any reader sees in st at this moment: every
// listed segment and backup is whole, the index has no gap and still ends
// with segment 60, and the backups the policy keeps roll forward.
func checkReadable(t testing.TB, st storage.Store, when string) {
	t.Helper()
	ctx := context.Background()
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		t.Fatalf("%s: load: %v", when, err)
	}
	if p := archive.Chain(ix.Segments); len(p) > 0 {
		t.Fatalf("%s: index has gaps: %v", when, p)
	}
	if l := ix.Last(); l == nil || l.Seq != 60 {
		t.Fatalf("%s: index ends at %v, want segment 60", when, l)
	}
	for _, s := range ix.Segments {
		for _, k := range []string{s.Key, archive.ManifestKey(s.Seq)} {
			if _, err := st.Stat(ctx, k); err != nil {
				t.Fatalf("%s: the index lists segment %d but %s: %v", when, s.Seq, k, err)
			}
		}
	}
	ms, err := List(ctx, st)
	if err != nil {
		t.Fatalf("%s: list backups: %v", when, err)
	}
	ids := map[string]bool{}
	for _, m := range ms {
		ids[m.ID] = true
		for _, o := range m.Objects() {
			if _, err := st.Stat(ctx, o.Key); err != nil {
				t.Fatalf("%s: backup %s is listed but %s: %v", when, m.ID, o.Key, err)
			}
		}
		if c := Chain(m, ix.Segments); m.ID != b1 && !c.Complete {
			t.Fatalf("%s: kept backup %s cannot roll forward: %s", when, m.ID, c.Detail)
		}
	}
	if !ids[b2] || !ids[b3] {
		t.Fatalf("%s: a kept backup is gone: %v", when, ids)
	}
}

// wantPruned checks the end state: exactly B2, B3, segments 23..60 and a
// catalog naming nothing below 23.
func wantPruned(t testing.TB, st storage.Store) {
	t.Helper()
	checkReadable(t, st, "after the prune")
	ctx := context.Background()
	var want []string
	for i := uint64(23); i <= 60; i++ {
		want = append(want, archive.SegmentKey(i), archive.ManifestKey(i))
	}
	want = append(want, archive.CatalogKey(1, 23, 25), archive.FloorKey(23))
	for f := uint64(26); f <= 46; f += 5 {
		want = append(want, archive.CatalogKey(1, f, f+4))
	}
	for _, id := range []string{b2, b3} {
		want = append(want, ManifestKey(id), SchemaKey(id), dataKey(id, 0, 1, "d", "t"), dataKey(id, 0, 2, "d", "t"))
	}
	sort.Strings(want)
	got := allKeys(t, st)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("store after the prune:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Segments[0].Seq != 23 || ix.Floor != 23 {
		t.Fatalf("index starts at %d, floor %d", ix.Segments[0].Seq, ix.Floor)
	}
}

func allKeys(t testing.TB, st storage.Store) []string {
	t.Helper()
	var keys []string
	if err := st.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		keys = append(keys, oi.Key+"")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

func digestAll(t testing.TB, st storage.Store) string {
	t.Helper()
	var b strings.Builder
	st.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		s, _ := st.Stat(context.Background(), oi.Key)
		fmt.Fprintf(&b, "%s %s\n", oi.Key, s.SHA256)
		return nil
	})
	return b.String()
}

// observed runs a check after every change the prune makes.
type observed struct {
	storage.Store
	after func(op, key string)
}

func (o *observed) Put(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	oi, err := o.Store.Put(ctx, key, r)
	o.after("put", key)
	return oi, err
}

func (o *observed) PutIfAbsent(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	oi, err := o.Store.PutIfAbsent(ctx, key, r)
	o.after("put", key)
	return oi, err
}

func (o *observed) Delete(ctx context.Context, key string) error {
	err := o.Store.Delete(ctx, key)
	o.after("delete", key)
	return err
}

func TestPruneDeletesInAnOrderReadersFollow(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	st := newStore(t)
	buildArchive(t, st)
	checkReadable(t, st, "before")

	// A dry run reports and changes nothing.
	before := digestAll(t, st)
	rep, err := Prune(ctx, st, testPolicy, now0, true, log)
	if err != nil {
		t.Fatal(err)
	}
	if digestAll(t, st) != before {
		t.Fatal("a dry run changed the store")
	}
	if len(rep.DeletedBackups) != 1 || rep.DeletedBackups[0].ID != b1 || len(rep.DeletedSegs) != 22 || rep.DeletedSegs[21].Seq != 22 ||
		len(rep.Kept) != 2 || rep.SegmentsKept == nil || rep.SegmentsKept.First != 23 || rep.FreedBytes != 30+22*100 {
		b, _ := json.MarshalIndent(rep, "", " ")
		t.Fatalf("dry run report:\n%s", b)
	}

	// The real one, with every intermediate state checked as a reader
	// would find it; and the daemon's compaction running in the middle
	// must not delete the straddling object's replacement.
	var steps []string
	obs := &observed{Store: st, after: func(op, key string) {
		steps = append(steps, op+" "+key)
		checkReadable(t, st, fmt.Sprintf("after %s %s", op, key))
		if op == "put" && key == archive.CatalogKey(1, 23, 25) {
			if err := archive.Compact(ctx, st); err != nil {
				t.Fatal(err)
			}
		}
	}}
	rep, err = Prune(ctx, obs, testPolicy, now0, false, log)
	if err != nil {
		t.Fatal(err)
	}
	wantPruned(t, st)
	if rep.CatalogRewritten[archive.CatalogKey(1, 21, 25)] != archive.CatalogKey(1, 23, 25) {
		t.Errorf("catalog rewrites: %v", rep.CatalogRewritten)
	}
	// The order: backup manifest before its objects, floor before any
	// catalog change, catalog before segments, each manifest before its segment.
	pos := func(s string) int {
		for i, x := range steps {
			if x == s {
				return i
			}
		}
		t.Fatalf("no step %q in %v", s, steps)
		return -1
	}
	order := []string{"delete " + ManifestKey(b1), "delete " + SchemaKey(b1), "put " + archive.FloorKey(23),
		"put " + archive.CatalogKey(1, 23, 25), "delete " + archive.CatalogKey(1, 21, 25),
		"delete " + archive.ManifestKey(1), "delete " + archive.SegmentKey(1), "delete " + archive.ManifestKey(22), "delete " + archive.SegmentKey(22)}
	for i := 1; i < len(order); i++ {
		if pos(order[i-1]) > pos(order[i]) {
			t.Errorf("%q came after %q", order[i-1], order[i])
		}
	}

	// A second prune has nothing to do.
	rep, err = Prune(ctx, st, testPolicy, now0, false, log)
	if err != nil || len(rep.DeletedBackups)+len(rep.DeletedSegs)+len(rep.CatalogDeleted) > 0 {
		t.Fatalf("second prune: %v %+v", err, rep)
	}

	// A catalog writer that read the archive before the prune (the
	// daemon's catalog of segments it uploaded) may write an object naming
	// pruned segments: readers ignore them below the floor, and the next
	// prune rewrites it.
	if _, err := archive.WriteCatalog(ctx, st, 1, segsN(20, 30)); err != nil {
		t.Fatal(err)
	}
	ix, err := archive.Load(ctx, st, false)
	if err != nil || ix.Segments[0].Seq != 23 {
		t.Fatalf("a stale catalog object shows pruned segments: %v", err)
	}
	if _, err := Prune(ctx, st, testPolicy, now0, false, log); err != nil {
		t.Fatal(err)
	}
	if keys := allKeys(t, st); !contains(keys, archive.CatalogKey(1, 23, 30)) || contains(keys, archive.CatalogKey(1, 20, 30)) {
		t.Fatalf("the stale object was not rewritten: %v", keys)
	}
}

func contains(keys []string, k string) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}

// crashing fails every change after the first n, as if the process died.
type crashing struct {
	storage.Store
	n atomic.Int64
}

var errCrash = errors.New("crashed")

func (c *crashing) ok() bool { return c.n.Add(-1) >= 0 }

func (c *crashing) Put(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	if !c.ok() {
		return storage.ObjectInfo{}, errCrash
	}
	return c.Store.Put(ctx, key, r)
}

func (c *crashing) PutIfAbsent(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	if !c.ok() {
		return storage.ObjectInfo{}, errCrash
	}
	return c.Store.PutIfAbsent(ctx, key, r)
}

func (c *crashing) Delete(ctx context.Context, key string) error {
	if !c.ok() {
		return errCrash
	}
	return c.Store.Delete(ctx, key)
}

// A prune killed after any number of changes leaves a readable archive,
// and the next prune finishes the job.
func TestPruneCrashAnywhereThenPruneAgain(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	tmpl := t.TempDir()
	ts, err := file.New(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	buildArchive(t, ts)
	// Every change up to the segments, then every third (segment
	// deletions repeat one pattern).
	next := func(n int) int {
		if n < 16 {
			return n + 1
		}
		return n + 3
	}
	for n := 0; ; n = next(n) {
		dir := t.TempDir()
		copyDir(t, tmpl, dir)
		st, err := file.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		c := &crashing{Store: st}
		c.n.Store(int64(n))
		_, err = Prune(ctx, c, testPolicy, now0, false, log)
		if err == nil {
			if n < 40 {
				t.Fatalf("the prune made only %d changes", n)
			}
			t.Logf("a full prune makes about %d changes", n)
			return
		}
		if !errors.Is(err, errCrash) {
			t.Fatalf("crash after %d: %v", n, err)
		}
		checkReadable(t, st, fmt.Sprintf("crashed after %d changes", n))
		// The dead process's lock would be taken over (see the lock tests).
		st.Delete(ctx, LockKey)
		if _, err := Prune(ctx, st, testPolicy, now0, false, log); err != nil {
			t.Fatalf("prune after a crash after %d changes: %v", n, err)
		}
		wantPruned(t, st)
	}
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPruneWaitsForARunningBackup(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	st := newStore(t)
	buildArchive(t, st)
	host, _ := os.Hostname()
	putLock(t, st, lockInfo{Token: "x", BackupID: "20261128T120000Z-123456", Host: host, BootID: bootID(), PID: os.Getpid(), PIDStart: mustStart(t), Renewed: time.Now()})
	before := digestAll(t, st)
	_, err := Prune(ctx, st, testPolicy, now0, false, log)
	var le *LockedError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "backup 20261128T120000Z-123456") {
		t.Fatalf("prune during a backup: %v", err)
	}
	if digestAll(t, st) != before {
		t.Fatal("a refused prune changed the store")
	}
	// A dry run needs no lock.
	if rep, err := Prune(ctx, st, testPolicy, now0, true, log); err != nil || len(rep.DeletedBackups) != 1 {
		t.Fatalf("dry run during a backup: %v", err)
	}
	// A backup during a prune is told so.
	st.Delete(ctx, LockKey)
	l, err := acquireLockAs(ctx, st, lockPrune, "", log)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release(ctx)
	_, err = acquireLock(ctx, st, "20261128T120001Z-654321", log)
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "a prune (retention) is running") {
		t.Fatalf("backup during a prune: %v", err)
	}
}

func TestPruneWithNoBackupsDeletesNothing(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	buildArchive(t, st)
	for _, id := range []string{b1, b2, b3} {
		st.Delete(ctx, ManifestKey(id)) // no manifest: no backup (leftovers)
	}
	rep, err := Prune(ctx, st, testPolicy, now0, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.DeletedSegs) != 0 || len(rep.DeletedBackups) != 0 || len(rep.Leftovers) != 3 {
		t.Fatalf("%+v", rep)
	}
	ix, err := archive.Load(ctx, st, false)
	if err != nil || len(ix.Segments) != 60 {
		t.Fatalf("segments after a prune without backups: %v", err)
	}
}

// A forged manifest dated in the future (with a position covering
// everything) would be kept as the newest backup and let prune delete the
// genuine ones and every segment: prune refuses, naming it, and deletes
// nothing, dry run or not.
func TestPruneRefusesABackupFromTheFuture(t *testing.T) {
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	buildArchive(t, st)
	ctx := context.Background()
	forged := bk("20271128T120000Z-0f0f0f", -365*24*time.Hour, "0-1-999999")
	body, _ := encodeJSON(forged)
	if _, err := st.Put(ctx, ManifestKey(forged.ID), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	before := digestAll(t, st)
	for _, dry := range []bool{true, false} {
		_, err := Prune(ctx, st, Policy{KeepLast: 1}, now0, dry, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), forged.ID) || !strings.Contains(err.Error(), "after now") {
			t.Fatalf("dry run %v: err = %v, want a refusal naming %s", dry, err, forged.ID)
		}
	}
	if digestAll(t, st) != before {
		t.Fatal("prune deleted or changed objects")
	}
	// A few minutes ahead is clock skew, not forgery.
	skewed := bk("20261128T120500Z-0e0e0e", -5*time.Minute, "0-1-545")
	if _, err := Prune(ctx, st, Policy{KeepLast: 9}, now0, true, nil); err == nil {
		t.Fatal("the forged backup is still there: want a refusal")
	}
	if err := st.Delete(ctx, ManifestKey(forged.ID)); err != nil {
		t.Fatal(err)
	}
	body, _ = encodeJSON(skewed)
	if _, err := st.Put(ctx, ManifestKey(skewed.ID), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if _, err := Prune(ctx, st, Policy{KeepLast: 9}, now0, true, nil); err != nil {
		t.Fatalf("a backup 5 minutes ahead: %v", err)
	}
}
