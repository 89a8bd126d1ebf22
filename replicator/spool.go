package replicator

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
)

// Spool is the local relay log between the primary and binvault's two
// consumers (archiver, applier). It is a directory of segment files, each a
// valid binlog file holding whole transactions:
//
//	<seq>.start.json  the position the segment starts at (written first)
//	<seq>.binlog      magic, format description, transactions
//	<seq>.json        the segment's manifest, written when it is closed
//
// A transaction reaches consumers only after it is written and fsync'd. On
// open, the newest segment's torn tail (a transaction a crash cut short) is
// truncated, so the spool always ends on a whole transaction and the stream
// resumes right after it.
type Spool struct {
	dir    string
	flavor string
	limits SpoolLimits
	log    *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed (and replaced) whenever consumers have something new
	closed  []*archive.Segment
	open    *openSegment
	end     binlog.Position
	endSet  binlog.GTIDSet
	hasEnd  bool
	nextSeq uint64
	source  archive.Source
	fork    *archive.Fork // recorded in the next segment (Fork)
	fde     []byte        // format description for the next segment
	curFile string        // primary binlog file the stream is in
	grouper binlog.Grouper
	txnOpen bool // a transaction's events are being written
	txns    uint64
	// closeAtCommit closes the open segment at the end of the transaction
	// being written (CloseNow during a transaction).
	closeAtCommit bool
	syncLater     func(end binlog.Position) bool // SetSyncHint

	// A closed segment is removed once the archiver has stored it: an
	// applier that falls further behind reads it from the archive, so a
	// slow or unreachable replica never grows the spool.
	archived uint64
	// arrived is when the first transaction of each closed segment was
	// whole in the spool (monotonic clock; for segments recovered at start,
	// their commit time): the live RPO counts from there.
	arrived map[uint64]time.Time
	// uploadEstimate says how long the store takes to make a closed segment
	// durable; a segment closes that much before its RPO deadline.
	uploadEstimate func() time.Duration
}

// SpoolLimits says when the open segment is closed: at SegmentMaxBytes, at
// the latest FlushInterval after it opened, and early enough that its first
// transaction reaches the store within RPOTarget of its arrival (given the
// recent upload time, SetUploadEstimate).
type SpoolLimits struct {
	SegmentMaxBytes int64
	FlushInterval   time.Duration
	RPOTarget       time.Duration // 0: FlushInterval alone decides
}

// defaultUploadEstimate is assumed before the first upload is measured.
const defaultUploadEstimate = 50 * time.Millisecond

// rpoSlack is the part of the RPO target kept for what happens outside
// binvault: the primary sending the transaction, a reader listing the
// segment. 1% of the target, at least 10 ms.
func rpoSlack(target time.Duration) time.Duration { return max(10*time.Millisecond, target/100) }

type openSegment struct {
	seq       uint64
	f         *os.File
	w         *bufio.Writer
	h         hash.Hash
	committed int64  // file offset after the last whole transaction
	durable   int64  // what readers may read: committed, once a transaction is fsync'd
	hashState []byte // h's state at committed
	opened    time.Time
	arrived   time.Time // when the first transaction became durable here
	meta      archive.Segment
	tables    map[string]struct{}
	set       binlog.GTIDSet // position after the last committed transaction
	// unsynced are whole transactions written but not fsync'd yet (see
	// SetSyncHint); a rollback drops them, and the stream sends them again.
	unsynced []unsyncedTxn
}

type unsyncedTxn struct {
	txn  *binlog.Txn
	file string // the primary's binlog file it ends in
}

// OpenSpool opens (creating if needed) the spool in dir and recovers it.
func OpenSpool(dir, flavor string, limits SpoolLimits, log *slog.Logger) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool.dir %s: %w", dir, err)
	}
	s := &Spool{dir: dir, flavor: flavor, limits: limits, log: log, changed: make(chan struct{}), arrived: map[uint64]time.Time{}}
	if err := s.recover(); err != nil {
		return nil, fmt.Errorf("recover spool %s: %w", dir, err)
	}
	return s, nil
}

func (s *Spool) path(seq uint64, ext string) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016d%s", seq, ext))
}

func (s *Spool) recover() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	starts := map[uint64]bool{}
	binlogs := map[uint64]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			os.Remove(filepath.Join(s.dir, name))
			continue
		}
		num, ext, _ := strings.Cut(name, ".")
		seq, err := strconv.ParseUint(num, 10, 64)
		if err != nil || len(num) != 16 {
			continue
		}
		switch ext {
		case "json":
			var m archive.Segment
			if err := readJSON(filepath.Join(s.dir, name), &m); err != nil {
				return err
			}
			s.closed = append(s.closed, &m)
			s.arrived[m.Seq] = m.FirstTime
		case "start.json":
			starts[seq] = true
		case "binlog":
			binlogs[seq] = true
		}
	}
	sort.Slice(s.closed, func(i, j int) bool { return s.closed[i].Seq < s.closed[j].Seq })
	for i := 1; i < len(s.closed); i++ {
		if s.closed[i].Seq != s.closed[i-1].Seq+1 {
			return fmt.Errorf("segments %d and %d are not consecutive: the spool was altered; move it aside to start over from the archive", s.closed[i-1].Seq, s.closed[i].Seq)
		}
	}
	if n := len(s.closed); n > 0 {
		last := s.closed[n-1]
		s.setEnd(last.End)
		s.nextSeq = last.Seq + 1
		s.source = last.Source
	} else {
		var o originFile
		if err := readJSON(filepath.Join(s.dir, originName), &o); err == nil {
			s.setEnd(o.Position)
			s.nextSeq = o.NextSeq
		} else if !os.IsNotExist(err) {
			return err
		}
	}
	// At most one segment is open: the one after the last closed one.
	for seq := range starts {
		isClosed := len(s.closed) > 0 && seq <= s.closed[len(s.closed)-1].Seq
		if isClosed {
			os.Remove(s.path(seq, ".start.json")) // closed before the start file was removed
			continue
		}
		if !binlogs[seq] {
			os.Remove(s.path(seq, ".start.json")) // crashed before the first write
			continue
		}
		if err := s.recoverOpen(seq); err != nil {
			return err
		}
	}
	closedSeqs := map[uint64]bool{}
	for _, m := range s.closed {
		closedSeqs[m.Seq] = true
	}
	for seq := range binlogs {
		if !starts[seq] && !closedSeqs[seq] {
			os.Remove(s.path(seq, ".binlog")) // removed segment whose data outlived its manifest
		}
	}
	return nil
}

// originName holds where the spool continues when it holds no segment:
// where it was started, or the end of the last segment it released. It
// keeps a restart from re-reading the primary's current position (and
// skipping what happened meanwhile) or re-streaming what was released.
const originName = "origin.json"

type originFile struct {
	Position binlog.Position `json:"position"`
	NextSeq  uint64          `json:"next_seq"`
}

// startFile is what <seq>.start.json holds.
type startFile struct {
	Seq    uint64          `json:"seq"`
	Start  binlog.Position `json:"start"`
	Source archive.Source  `json:"source"`
	File   string          `json:"file"` // primary binlog file at the start
	Fork   *archive.Fork   `json:"fork,omitempty"`
}

// recoverOpen scans the open segment, truncates its torn tail and reopens it
// for appending; an open segment without a whole transaction is removed.
func (s *Spool) recoverOpen(seq uint64) error {
	var st startFile
	if err := readJSON(s.path(seq, ".start.json"), &st); err != nil {
		return err
	}
	if len(s.closed) > 0 && seq != s.nextSeq {
		return fmt.Errorf("open segment %d does not follow closed segment %d", seq, s.nextSeq-1)
	}
	path := s.path(seq, ".binlog")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	o := &openSegment{seq: seq, f: f, h: sha256.New(), tables: map[string]struct{}{}, opened: time.Now()}
	o.meta = archive.Segment{Format: archive.SegmentFormat, Seq: seq, Source: st.Source, Start: st.Start, Fork: st.Fork}
	set, err := binlog.ParseGTIDSet(s.flavor, st.Start.GTIDSet)
	if err != nil {
		f.Close()
		return err
	}
	o.set = set
	end := st.Start
	r, err := binlog.NewReader(f, s.flavor)
	if err != nil {
		// Not even the magic: nothing committed.
		f.Close()
		return s.dropOpen(seq)
	}
	var g binlog.Grouper
	var fde []byte
	committed := int64(0)
	for {
		off := r.Offset()
		ev, err := r.Next()
		if err != nil {
			if err != io.EOF {
				s.log.Warn("spool: truncating torn tail", "segment", seq, "offset", committed, "reason", err.Error())
			}
			break
		}
		if ev.Header.Type == replication.FORMAT_DESCRIPTION_EVENT {
			fde = ev.Raw
			committed = r.Offset()
			continue
		}
		role, err := g.Feed(ev)
		if err != nil {
			s.log.Warn("spool: truncating at an event outside a transaction", "segment", seq, "offset", off, "reason", err.Error())
			break
		}
		if role == binlog.End {
			t := g.Txn()
			o.addTxn(t)
			if err := o.set.Add(t.GTID); err != nil {
				f.Close()
				return err
			}
			end.Pos = t.EndLogPos
			committed = r.Offset()
		}
	}
	if o.meta.Txns == 0 {
		f.Close()
		return s.dropOpen(seq)
	}
	// Recompute the hash over exactly the committed bytes.
	if err := f.Truncate(committed); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	o.h.Reset()
	if _, err := io.CopyN(o.h, f, committed); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	o.committed, o.durable = committed, committed
	o.arrived = o.meta.FirstTime
	o.hashState = marshalHash(o.h)
	o.w = bufio.NewWriterSize(f, spoolWriteBuffer)
	end.File = st.File
	end.GTIDSet = o.set.String()
	o.meta.End = end
	s.open = o
	s.fde = fde
	s.curFile = st.File
	s.source = st.Source
	s.setEnd(end)
	s.nextSeq = seq + 1
	return nil
}

func (s *Spool) dropOpen(seq uint64) error {
	os.Remove(s.path(seq, ".binlog"))
	os.Remove(s.path(seq, ".start.json"))
	return syncDir(s.dir)
}

func (s *Spool) setEnd(p binlog.Position) {
	set, err := binlog.ParseGTIDSet(s.flavor, p.GTIDSet)
	if err != nil {
		s.log.Error("spool: unparsable GTID set", "gtid_set", p.GTIDSet, "err", err)
		return
	}
	s.end, s.endSet, s.hasEnd = p, set, true
}

// End returns the position after the last whole transaction in the spool,
// and false when the spool is empty and has never been started.
func (s *Spool) End() (binlog.Position, uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end, s.nextSeq, s.hasEnd
}

// Start sets the position and segment number the spool continues from, when
// it is empty: the archive's end, or where the user asked to start.
func (s *Spool) Start(p binlog.Position, nextSeq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open != nil || len(s.closed) > 0 {
		return errors.New("spool already holds segments")
	}
	s.setEnd(p)
	if !s.hasEnd {
		return fmt.Errorf("start position %s does not parse", p)
	}
	s.nextSeq = nextSeq
	return writeJSONAtomic(s.dir, filepath.Join(s.dir, originName), originFile{Position: p, NextSeq: nextSeq})
}

// SetSource records the primary's identity for the manifests of new segments.
func (s *Spool) SetSource(src archive.Source) {
	s.mu.Lock()
	s.source = src
	s.mu.Unlock()
}

// Source is the primary the spool's new segments name.
func (s *Spool) Source() archive.Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.source
}

// SwitchSource closes the open segment and records a new primary for the
// segments that follow: a segment never spans two servers. The end keeps
// its GTID position and drops the old server's binlog coordinates. Call it
// between connections (after Abort).
func (s *Spool) SwitchSource(src archive.Source) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.txnOpen {
		return errors.New("cannot switch sources inside a transaction")
	}
	if err := s.closeOpenLocked(); err != nil {
		return err
	}
	s.source = src
	s.curFile, s.fde = "", nil
	if s.hasEnd {
		s.end = binlog.Position{GTIDSet: s.end.GTIDSet}
	}
	return nil
}

// Fork is SwitchSource to a new primary that lacks transactions the spool
// (or the archive) holds: the spool continues from start, the new
// primary's position, and the next segment records the fork (f.After is
// the abandoned end). A crash before that segment is written forgets the
// fork; the restart then refuses the primary again.
func (s *Spool) Fork(src archive.Source, start binlog.Position, f archive.Fork) error {
	if err := s.SwitchSource(src); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set, err := binlog.ParseGTIDSet(s.flavor, start.GTIDSet)
	if err != nil {
		return err
	}
	s.end, s.endSet, s.hasEnd = start, set, true
	s.fork = &f
	return nil
}

// Append writes one event from the stream. Events outside transactions
// update the stream's context (format description, binlog file); a
// transaction's events go to the open segment, and its last event makes it
// durable and visible to consumers.
func (s *Spool) Append(ev binlog.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.Header.Type {
	case replication.FORMAT_DESCRIPTION_EVENT:
		fde := closedFDE(ev.Raw)
		if s.open != nil && !sameFDE(s.fde, fde) {
			if err := s.closeOpenLocked(); err != nil {
				return err
			}
		}
		s.fde = fde
		return nil
	case replication.ROTATE_EVENT:
		if rot, ok := ev.Parsed.(*replication.RotateEvent); ok {
			name := string(rot.NextLogName)
			if name != s.curFile && s.open != nil && !s.txnOpen {
				// One segment never spans two primary binlog files, so its
				// positions are those of one file.
				if err := s.closeOpenLocked(); err != nil {
					return err
				}
			}
			s.curFile = name
		}
		return nil
	}
	role, err := s.grouper.Feed(ev)
	if err != nil {
		return err
	}
	switch role {
	case binlog.Outside:
		return nil
	case binlog.Begin:
		if s.open == nil {
			if err := s.createLocked(ev.Header.Timestamp); err != nil {
				return err
			}
		}
		s.txnOpen = true
	}
	o := s.open
	if _, err := o.w.Write(ev.Raw); err != nil {
		return fmt.Errorf("spool write: %w", err)
	}
	o.h.Write(ev.Raw)
	if role != binlog.End {
		return nil
	}
	return s.commitLocked(s.grouper.Txn())
}

func (s *Spool) createLocked(ts uint32) error {
	if !s.hasEnd {
		return errors.New("spool has no start position")
	}
	if s.fde == nil {
		return errors.New("transaction before any format description event")
	}
	seq := s.nextSeq
	st := startFile{Seq: seq, Start: s.end, Source: s.source, File: s.curFile, Fork: s.fork}
	if err := writeJSONAtomic(s.dir, s.path(seq, ".start.json"), st); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path(seq, ".binlog"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	o := &openSegment{seq: seq, f: f, w: bufio.NewWriterSize(f, spoolWriteBuffer), h: sha256.New(), opened: time.Now(), tables: map[string]struct{}{}}
	o.meta = archive.Segment{Format: archive.SegmentFormat, Seq: seq, Source: s.source, Start: s.end, End: s.end, Fork: s.fork}
	s.fork = nil
	o.set = s.endSet.Clone()
	for _, b := range [][]byte{binlog.Magic, s.fde} {
		o.w.Write(b)
		o.h.Write(b)
	}
	// The header counts as committed: it must reach the file now, or a
	// rollback of the first transaction (Flush at SIGTERM, Abort) would
	// discard it from the buffer and leave zeros in its place, under the
	// header's SHA-256 (the archiver then refused the segment forever as
	// "local disk damage"). Found by test/retention_test.go's restart
	// under load.
	if err := o.w.Flush(); err != nil {
		f.Close()
		return err
	}
	o.committed = int64(len(binlog.Magic) + len(s.fde))
	o.hashState = marshalHash(o.h)
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	s.open = o
	s.nextSeq = seq + 1
	return nil
}

// maxUnsynced bounds the whole transactions that wait for one fsync.
const maxUnsynced = 256

// commitLocked makes the transaction just written durable and visible,
// with those written before it, unless the sync hint says a later
// transaction's fsync is about to cover it.
func (s *Spool) commitLocked(t *binlog.Txn) error {
	o := s.open
	s.txnOpen = false
	o.unsynced = append(o.unsynced, unsyncedTxn{t, s.curFile})
	if s.syncLater != nil && len(o.unsynced) < maxUnsynced && !s.closeAtCommit &&
		s.syncLater(binlog.Position{File: s.curFile, Pos: t.EndLogPos}) {
		return nil
	}
	if err := s.syncLocked(); err != nil {
		return err
	}
	if d := s.deadlineLocked(); s.closeAtCommit || o.committed >= s.limits.SegmentMaxBytes || !d.IsZero() && !time.Now().Before(d) {
		return s.closeOpenLocked()
	}
	return nil
}

// syncLocked makes the whole transactions written since the last fsync
// durable and visible to consumers.
func (s *Spool) syncLocked() error {
	o := s.open
	if len(o.unsynced) == 0 {
		return nil
	}
	if err := o.w.Flush(); err != nil {
		return fmt.Errorf("spool write: %w", err)
	}
	if err := o.f.Sync(); err != nil {
		return fmt.Errorf("spool fsync: %w", err)
	}
	for _, u := range o.unsynced {
		t := u.txn
		if err := o.set.Add(t.GTID); err != nil {
			return fmt.Errorf("GTID %s: %w", t.GTID, err)
		}
		o.committed += t.Bytes
		if o.meta.Txns == 0 {
			o.arrived = time.Now()
		}
		o.addTxn(t)
		s.txns++
		o.meta.End = binlog.Position{File: u.file, Pos: t.EndLogPos}
	}
	o.unsynced = o.unsynced[:0]
	o.durable = o.committed
	o.hashState = marshalHash(o.h)
	o.meta.End.GTIDSet = o.set.String()
	s.end, s.endSet = o.meta.End, o.set.Clone()
	s.notifyLocked()
	return nil
}

// SetSyncHint lets whole transactions wait for a later one's fsync while
// later(end) says that one has already arrived (semi-sync spool mode: a
// later transaction's acknowledgement request is in): one fsync then
// makes a burst of commits durable, as the primary's group commit does.
func (s *Spool) SetSyncHint(later func(end binlog.Position) bool) {
	s.mu.Lock()
	s.syncLater = later
	s.mu.Unlock()
}

// CloseNow closes the open segment now, or at the end of the transaction
// being written: semi-sync store mode acknowledges a transaction once its
// segment is stored.
func (s *Spool) CloseNow() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		return nil
	}
	if s.txnOpen {
		s.closeAtCommit = true
		return nil
	}
	return s.closeOpenLocked()
}

// Unarchived reports whether a closed segment waits for the archiver.
func (s *Spool) Unarchived() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.closed) > 0 && s.closed[len(s.closed)-1].Seq > s.archived
}

// deadlineLocked is when the open segment must close: FlushInterval after
// it opened, or earlier, so that its first transaction is in the store
// RPOTarget after it arrived, if the upload takes as long as recent ones.
// Under a steady load that makes about one segment (one PUT) per
// RPOTarget; an idle spool has no open segment and makes none.
func (s *Spool) deadlineLocked() time.Time {
	o := s.open
	var d time.Time // zero: none yet
	if s.limits.FlushInterval > 0 {
		d = o.opened.Add(s.limits.FlushInterval)
	}
	if s.limits.RPOTarget > 0 && !o.arrived.IsZero() {
		up := defaultUploadEstimate
		if s.uploadEstimate != nil {
			if e := s.uploadEstimate(); e > 0 {
				up = e
			}
		}
		// Beyond the upload, the transaction took a moment to reach us
		// and a reader takes one to list the segment.
		up += rpoSlack(s.limits.RPOTarget)
		// A store slower than half the target cannot meet it: closing
		// after every transaction would only multiply the requests.
		up = min(up, s.limits.RPOTarget/2)
		if due := o.arrived.Add(s.limits.RPOTarget - up); d.IsZero() || due.Before(d) {
			d = due
		}
	}
	return d
}

// SetUploadEstimate tells the spool how long making a segment durable in
// the store takes now (the archiver measures it).
func (s *Spool) SetUploadEstimate(f func() time.Duration) {
	s.mu.Lock()
	s.uploadEstimate = f
	s.mu.Unlock()
}

func (o *openSegment) addTxn(t *binlog.Txn) {
	m := &o.meta
	ts := time.Unix(int64(t.Time), 0).UTC()
	if m.Txns == 0 {
		m.FirstGTID, m.FirstTime = t.GTID, ts
	}
	m.LastGTID, m.LastTime = t.GTID, ts
	m.Txns++
	m.DDL = m.DDL || t.DDL
	for _, tb := range t.Tables {
		o.tables[tb] = struct{}{}
	}
}

func (s *Spool) txnCount() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.txns
}

// Abort discards a transaction whose events were cut off (the connection
// dropped mid-transaction): the stream will resend it whole.
func (s *Spool) Abort() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grouper.Reset()
	s.txnOpen = false
	if s.open == nil {
		return nil
	}
	return s.open.rollback()
}

// rollback drops what was written after the last whole transaction.
func (o *openSegment) rollback() error {
	o.unsynced = o.unsynced[:0]
	o.w.Reset(o.f)
	if err := o.f.Truncate(o.committed); err != nil {
		return err
	}
	if _, err := o.f.Seek(o.committed, io.SeekStart); err != nil {
		return err
	}
	o.h = unmarshalHash(o.hashState)
	return nil
}

// Tick closes the open segment once its deadline has come, unless a
// transaction is being written; call it while the stream is idle.
func (s *Spool) Tick() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil || s.txnOpen {
		return nil
	}
	if d := s.deadlineLocked(); !d.IsZero() && !time.Now().Before(d) {
		return s.closeOpenLocked()
	}
	return nil
}

// FlushDeadline is when the open segment must be closed, or zero when none
// is open or it has no deadline yet (its first transaction is not whole).
func (s *Spool) FlushDeadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		return time.Time{}
	}
	return s.deadlineLocked()
}

// Flush closes the open segment if it holds a whole transaction (on
// shutdown, so what was streamed gets archived).
func (s *Spool) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		return nil
	}
	if s.txnOpen {
		s.grouper.Reset()
		s.txnOpen = false
		if err := s.open.rollback(); err != nil {
			return err
		}
	}
	return s.closeOpenLocked()
}

func (s *Spool) closeOpenLocked() error {
	o := s.open
	if o == nil {
		return nil
	}
	s.closeAtCommit = false
	if s.txnOpen {
		return errors.New("cannot close a segment inside a transaction")
	}
	if err := s.syncLocked(); err != nil {
		return err
	}
	if err := o.w.Flush(); err != nil {
		return err
	}
	if err := o.f.Sync(); err != nil {
		return err
	}
	if err := o.f.Close(); err != nil {
		return err
	}
	if o.meta.Txns == 0 {
		// Nothing whole in it (its first transaction was rolled back):
		// no empty segment goes to the archive; the number is reused.
		s.open = nil
		s.nextSeq = o.seq
		return s.dropOpen(o.seq)
	}
	m := o.meta
	m.Bytes = o.committed
	m.SHA256 = hex.EncodeToString(o.h.Sum(nil))
	for tb := range o.tables {
		m.Tables = append(m.Tables, tb)
	}
	sort.Strings(m.Tables)
	if err := writeJSONAtomic(s.dir, s.path(o.seq, ".json"), m); err != nil {
		return err
	}
	os.Remove(s.path(o.seq, ".start.json"))
	s.closed = append(s.closed, &m)
	s.arrived[o.seq] = o.arrived
	s.open = nil
	s.notifyLocked()
	return nil
}

func (s *Spool) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Changed returns a channel closed at the next commit or segment close.
func (s *Spool) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Closed returns the manifests of closed segments after seq, oldest first.
func (s *Spool) Closed(after uint64) []archive.Segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []archive.Segment
	for _, m := range s.closed {
		if m.Seq > after {
			out = append(out, *m)
		}
	}
	return out
}

// Snapshot returns, in one consistent view, the closed segments, the
// segment being written (if any, last) and the number the next new segment
// will get.
func (s *Spool) Snapshot() (segs []archive.Segment, openSeq, nextSeq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.closed {
		segs = append(segs, *m)
	}
	if s.open != nil {
		segs = append(segs, s.open.meta)
		openSeq = s.open.seq
	}
	return segs, openSeq, s.nextSeq
}

// Locate tells where segment seq is: its file, whether it is closed, and
// how many of its bytes hold whole transactions. ok is false when the spool
// does not hold it (released, or not written yet).
func (s *Spool) Locate(seq uint64) (path string, closed bool, committed int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open != nil && s.open.seq == seq {
		return s.path(seq, ".binlog"), false, s.open.durable, true
	}
	for _, m := range s.closed {
		if m.Seq == seq {
			return s.path(seq, ".binlog"), true, m.Bytes, true
		}
	}
	return "", false, 0, false
}

// LastCommit is the commit time of the newest whole transaction in the
// spool (zero before the first).
func (s *Spool) LastCommit() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open != nil && s.open.meta.Txns > 0 {
		return s.open.meta.LastTime
	}
	if n := len(s.closed); n > 0 {
		return s.closed[n-1].LastTime
	}
	return time.Time{}
}

// Checksums reports whether the events being spooled carry CRC32 (from
// the stream's format description); ok is false before the first one.
func (s *Spool) Checksums() (crc, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fde == nil {
		return false, false
	}
	d := binlog.NewDecoder(s.flavor)
	ev, err := d.Decode(s.fde)
	if err != nil {
		return false, false
	}
	fde, isFDE := ev.Parsed.(*replication.FormatDescriptionEvent)
	return isFDE && fde.ChecksumAlgorithm == replication.BINLOG_CHECKSUM_ALG_CRC32, isFDE
}

// Manifest is segment seq's manifest while the spool holds it; for the
// segment being written, as far as it is committed.
func (s *Spool) Manifest(seq uint64) (archive.Segment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open != nil && s.open.seq == seq {
		return s.open.meta, true
	}
	for _, m := range s.closed {
		if m.Seq == seq {
			return *m, true
		}
	}
	return archive.Segment{}, false
}

// SegmentPath is the file of a closed segment.
func (s *Spool) SegmentPath(seq uint64) string { return s.path(seq, ".binlog") }

// Archived records that segments up to seq are in the store.
func (s *Spool) Archived(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.archived = max(s.archived, seq)
	return s.gcLocked()
}

// gcLocked removes closed segments every consumer is done with.
func (s *Spool) gcLocked() error {
	done := s.archived
	var released *archive.Segment
	for len(s.closed) > 0 && s.closed[0].Seq <= done {
		released = s.closed[0]
		// The origin moves first: a crash between leaves a segment the
		// archiver finds already stored, never a position behind the spool.
		if err := writeJSONAtomic(s.dir, filepath.Join(s.dir, originName), originFile{Position: released.End, NextSeq: released.Seq + 1}); err != nil {
			return err
		}
		if err := s.removeLocked(released.Seq); err != nil {
			return err
		}
	}
	return nil
}

func (s *Spool) removeLocked(seq uint64) error {
	for i, m := range s.closed {
		if m.Seq == seq {
			// Manifest first: a crash in between leaves orphan data, which
			// recovery deletes, never a manifest without its data.
			if err := os.Remove(s.path(seq, ".json")); err != nil && !os.IsNotExist(err) {
				return err
			}
			if err := os.Remove(s.path(seq, ".binlog")); err != nil && !os.IsNotExist(err) {
				return err
			}
			s.closed = append(s.closed[:i], s.closed[i+1:]...)
			delete(s.arrived, seq)
			return nil
		}
	}
	return nil
}

// OldestUnarchived is when the oldest transaction in the spool that the
// archiver has not stored yet arrived here (monotonic clock), and its
// commit time on the primary (whole seconds); false when there is none.
// The age of the first is the live RPO: what losing this host now would
// lose. The age of the second adds the primary's delay in sending it.
func (s *Spool) OldestUnarchived() (arrived, committed time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.closed {
		if m.Seq > s.archived && m.Txns > 0 {
			return s.arrived[m.Seq], m.FirstTime, true
		}
	}
	if s.open != nil && s.open.meta.Txns > 0 {
		return s.open.arrived, s.open.meta.FirstTime, true
	}
	return time.Time{}, time.Time{}, false
}

// Segments is the number of closed segments still in the spool.
func (s *Spool) Segments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.closed)
}

// SpoolID identifies a spool directory (created once, with the directory
// if need be): it labels binvault's registration on the primary, so a
// stale registration of our own is not mistaken for a server_id collision.
func SpoolID(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("spool.dir %s: %w", dir, err)
	}
	p := filepath.Join(dir, "id")
	if b, err := os.ReadFile(p); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(r[:])
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("spool.dir %s: %w", dir, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", err
	}
	return id, syncDir(dir)
}

// Dir is the spool directory.
func (s *Spool) Dir() string { return s.dir }

// Bytes is the spool's size on disk: closed and open segments.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, m := range s.closed {
		n += m.Bytes
	}
	if s.open != nil {
		n += s.open.committed
	}
	return n
}

// Close flushes nothing (Flush does that) and releases the open file; the
// torn tail, if any, is handled by the next open.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open != nil {
		s.open.w.Flush()
		err := s.open.f.Close()
		s.open = nil
		return err
	}
	return nil
}

// closedFDE returns the format description with the "binlog in use" flag
// cleared (and its checksum fixed): a segment is a closed, complete file.
func closedFDE(raw []byte) []byte {
	fde := append([]byte(nil), raw...)
	const inUse = 0x1
	flags := binary.LittleEndian.Uint16(fde[17:19])
	if flags&inUse == 0 {
		return fde
	}
	binary.LittleEndian.PutUint16(fde[17:19], flags&^inUse)
	if binlog.VerifyCRC(raw) {
		n := len(fde) - 4
		binary.LittleEndian.PutUint32(fde[n:], crc32.ChecksumIEEE(fde[:n]))
	}
	return fde
}

// sameFDE compares format descriptions ignoring the header (timestamp,
// log position, flags) and checksum, which differ between files of the
// same server version and settings.
func sameFDE(a, b []byte) bool {
	if len(a) != len(b) || len(a) < binlog.HeaderSize+4 {
		return false
	}
	return string(a[binlog.HeaderSize:len(a)-4]) == string(b[binlog.HeaderSize:len(b)-4])
}

func marshalHash(h hash.Hash) []byte {
	b, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	return b
}

func unmarshalHash(state []byte) hash.Hash {
	h := sha256.New()
	h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state)
	return h
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeJSONAtomic writes via a temp file, fsync and rename, then fsyncs the directory.
func writeJSONAtomic(dir, path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
