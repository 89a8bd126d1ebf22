package serve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/replicator"
)

// Error codes a primary sends to end a dump. 1236 stops the replica's IO
// thread for good (its message shows in SHOW SLAVE STATUS); any other
// error makes it reconnect.
const (
	erFatalReadingBinlog = 1236 // ER_MASTER_FATAL_ERROR_READING_BINLOG
	erUnknown            = 1105 // ER_UNKNOWN_ERROR
	binlogDumpNonBlock   = 0x01 // BINLOG_DUMP_NON_BLOCK
)

// fatal is an error that stops the replica, naming what is wrong.
func fatal(format string, args ...any) error {
	return mysql.NewError(erFatalReadingBinlog, fmt.Sprintf(format, args...))
}

// dumper streams one replica's binlog.
type dumper struct {
	ss       *session
	h        History
	feed     *replicator.Feed
	serverID uint32 // ours, on the events we make
	crc      bool   // the history's events carry CRC32, and so do the events binvault makes
	// rotateCRC frames the first artificial rotate: as the client's
	// @master_binlog_checksum says, then as the history's events.
	rotateCRC bool
	hb        time.Duration
	nonBlock  bool

	file string // primary binlog file the replica is in
	pos  uint32 // end_log_pos of the last event sent there

	// GTID mode: the groups the replica has are skipped.
	skip binlog.GTIDSet
	// GTID mode: the history's GTID the stream has passed in each domain
	// (from the first segment's start on), until it reached the replica's
	// own GTID there (checked): a primary serves a replica only from a
	// GTID its binlog holds.
	passed     map[uint32]binlog.MariaDBGTID
	checked    map[uint32]bool
	skipping   bool
	skipped    bool
	skipPos    uint32
	listedSkip bool
	// File/position mode: the events up to startPos of startFile are skipped.
	startFile string
	startPos  uint32

	grp  binlog.Grouper
	sent binlog.GTIDSet
	pkt  []byte
}

// dump runs COM_BINLOG_DUMP: binlog position (4), flags (2), server_id
// (4), binlog file name. A MariaDB replica in GTID mode gives its
// position in @slave_connect_state instead.
func (ss *session) dump(data []byte) error {
	if len(data) < 10 {
		return mysql.NewError(mysql.ER_MALFORMED_PACKET, "malformed COM_BINLOG_DUMP")
	}
	pos := binary.LittleEndian.Uint32(data)
	flags := binary.LittleEndian.Uint16(data[4:])
	sid := binary.LittleEndian.Uint32(data[6:])
	file := string(data[10:])
	ss.mu.Lock()
	regd := ss.regd
	if !regd {
		ss.serverID = sid
	}
	ss.dumping = true
	ss.mu.Unlock()
	if !regd && sid != 0 {
		ss.srv.register(ss)
	}
	defer func() {
		ss.mu.Lock()
		ss.dumping = false
		ss.mu.Unlock()
	}()
	h := ss.srv.o.History
	src := h.Source()
	d := &dumper{ss: ss, h: h, serverID: src.ServerID, nonBlock: flags&binlogDumpNonBlock != 0 || sid == 0}
	if ns, err := strconv.ParseInt(ss.vars["master_heartbeat_period"], 10, 64); err == nil && ns > 0 {
		d.hb = time.Duration(ns)
	}
	// As a MariaDB primary (is_slave_checksum_aware): a client that set
	// @master_binlog_checksum, whatever the value, takes the binlog's
	// events as they are; the value frames only the first artificial
	// rotate (mariadb-binlog sets 'NONE', then reads CRC32 events).
	checksum, aware := ss.vars["master_binlog_checksum"]
	d.crc = ss.srv.checksumName() == "CRC32"
	d.rotateCRC = checksum == "CRC32"
	if d.crc && !aware {
		return fatal("Slave can not handle replication events with the checksum that master is configured to log")
	}
	ctx := ss.ctx
	ss.bc.dumping.Store(true)
	// The replica sends nothing while it is fed; a read that returns means
	// it went away, which ends a wait at once.
	go func() {
		var b [64]byte
		for {
			if _, err := ss.raw.Read(b[:]); err != nil {
				ss.cancel()
				return
			}
		}
	}()
	var err error
	if state, ok := ss.vars["slave_connect_state"]; ok {
		err = d.startGTID(ctx, src.Flavor, state)
	} else {
		err = d.startFilePos(ctx, file, pos)
	}
	if err == nil {
		defer d.feed.Close()
		ss.srv.o.Log.Info("replica connected", "server_id", ss.serverID, "remote", ss.remote, "from", d.skip.String(), "file", file, "pos", pos)
		err = d.stream(ctx)
	}
	ss.done = true
	ss.bc.Flush()
	ss.mu.Lock()
	kicked := ss.kickErr
	ss.mu.Unlock()
	if kicked != nil {
		return kicked
	}
	var me *mysql.MyError
	if errors.As(err, &me) {
		ss.srv.o.Log.Warn("replica refused", "server_id", ss.serverID, "remote", ss.remote, "code", me.Code, "err", me.Message)
		return me
	}
	if err != nil && ctx.Err() == nil {
		ss.srv.o.Log.Info("replica disconnected", "server_id", ss.serverID, "remote", ss.remote, "err", err.Error())
	}
	return mysql.NewError(erUnknown, "binvault ends this dump; reconnect")
}

// startGTID positions the stream after the replica's GTID state, refusing
// as a primary does a position the history does not hold.
func (d *dumper) startGTID(ctx context.Context, flavor, state string) error {
	pos, err := binlog.ParseGTIDSet(flavor, state)
	if err != nil {
		return fatal("the replica's GTID position %q does not parse: %v", state, err)
	}
	end, _, _ := d.h.End()
	if e, err := binlog.ParseGTIDSet(flavor, end.GTIDSet); err == nil {
		if mine, theirs, ok := errant(pos, e); ok {
			if theirs.Seq > mine.Seq {
				return fatal("the replica's position %s holds GTID %s, which binvault does not have: its history ends at %q in domain %d (the replica is ahead of the primary binvault streams from, or executed transactions of its own); rebuild the replica, or remove those transactions and their GTIDs", pos, theirs, e, theirs.Domain)
			}
			return fatal("the replica's position %s holds GTID %s where binvault's history has %s: the replica executed a transaction of its own (errant); rebuild the replica, or remove it and its GTID", pos, theirs, mine)
		}
	}
	// A history with no transaction yet starts at its end: a replica
	// behind it lacks what binvault never held (the primary's history
	// before binvault started).
	if e, ok := d.historyStart(ctx, flavor); ok && !pos.Contains(e) {
		return fatal("the replica's position %q is not in the history binvault holds: binvault holds the history from %q, and no transaction yet; rebuild the replica from a backup of the primary taken at or after that position and start it from that backup's position", pos, e)
	}
	d.skip = pos.Clone()
	d.sent = pos.Clone()
	d.passed, d.checked = map[uint32]binlog.MariaDBGTID{}, map[uint32]bool{}
	d.feed, err = d.h.Open(ctx, pos)
	var he *replicator.HistoryError
	if errors.As(err, &he) && he.LostInFork {
		return fatal("%v", he)
	}
	if errors.As(err, &he) {
		return fatal("the replica's position %q is not in the history binvault holds: %s; rebuild the replica from a backup binvault holds (binvault restore) and start it from that backup's position", pos, d.coverage(ctx))
	}
	if err != nil {
		return mysql.NewError(erUnknown, fmt.Sprintf("binvault cannot read its history now: %v", err))
	}
	return nil
}

// historyStart is where the history starts when it holds no segment yet
// (ok false when it holds one, or nothing is known).
func (d *dumper) historyStart(ctx context.Context, flavor string) (binlog.GTIDSet, bool) {
	end, _, ok := d.h.End()
	if !ok {
		return binlog.GTIDSet{}, false
	}
	if segs, err := d.h.Segments(ctx); err != nil || len(segs) > 0 {
		return binlog.GTIDSet{}, false
	}
	e, err := binlog.ParseGTIDSet(flavor, end.GTIDSet)
	return e, err == nil
}

// pass checks the replica's GTID in g's domain against the history the
// stream passes (the first segment's start, then each group): the
// replica must stand on a GTID the history holds. At the same sequence
// number with another server_id it executed a transaction of its own; a
// history that moves past its sequence number without holding it never
// had that GTID (a hole, or an errant transaction).
func (d *dumper) pass(g binlog.MariaDBGTID) error {
	mine, ok := d.skip.At(g.Domain)
	if !ok || d.checked[g.Domain] {
		return nil
	}
	prev, seen := d.passed[g.Domain]
	d.passed[g.Domain] = g
	switch {
	case g.Seq < mine.Seq:
		return nil
	case g.Seq == mine.Seq && g.Server == mine.Server:
		d.checked[g.Domain] = true
		return nil
	case g.Seq == mine.Seq:
		return fatal("the replica's position %s holds GTID %s where binvault's history has %s: the replica executed a transaction of its own (errant); rebuild the replica, or remove it and its GTID", d.skip, mine, g)
	}
	after := "its start"
	if seen {
		after = prev.String()
	}
	return fatal("the replica's position %s holds GTID %s, which binvault's history does not have: in domain %d it goes from %s to %s (the replica executed a transaction of its own, or its position is in a hole); rebuild the replica", d.skip, mine, g.Domain, after, g)
}

// startFilePos positions the stream at a primary binlog file and offset
// (a replica with MASTER_USE_GTID=no, mariadb-binlog): the segments hold
// the primary's file names and positions.
func (d *dumper) startFilePos(ctx context.Context, file string, pos uint32) error {
	segs, err := d.h.Segments(ctx)
	if err != nil {
		return mysql.NewError(erUnknown, fmt.Sprintf("binvault cannot read its history now: %v", err))
	}
	if len(segs) == 0 {
		return fatal("binvault holds no binlog yet")
	}
	start := segs[0]
	if file != "" {
		found := false
		for _, s := range segs {
			if s.End.File == file && s.End.Pos > pos {
				start, found = s, true
				break
			}
		}
		if !found {
			return fatal("Could not find first log file name in binary log index file: binvault holds no events of %s after position %d (%s)", file, pos, d.coverage(ctx))
		}
		d.startFile, d.startPos = file, pos
	}
	set, err := binlog.ParseGTIDSet(start.Source.Flavor, start.Start.GTIDSet)
	if err != nil {
		return fatal("segment %d: %v", start.Seq, err)
	}
	d.sent = set.Clone()
	d.feed, err = d.h.Open(ctx, set)
	if err != nil {
		return mysql.NewError(erUnknown, fmt.Sprintf("binvault cannot read its history now: %v", err))
	}
	return nil
}

// coverage says what binvault holds, for messages.
func (d *dumper) coverage(ctx context.Context) string {
	segs, err := d.h.Segments(ctx)
	if err != nil || len(segs) == 0 {
		return "binvault holds no history"
	}
	end, _, _ := d.h.End()
	return fmt.Sprintf("binvault holds the history from %q (segment %d) to %q", segs[0].Start.GTIDSet, segs[0].Seq, end.GTIDSet)
}

// errant finds a GTID of the replica's state that the history does not
// hold: beyond its end in a domain, or another transaction at its end's
// sequence number. A domain the history never had is not errant (a primary
// starts sending it when it appears).
func errant(state, end binlog.GTIDSet) (mine, theirs binlog.MariaDBGTID, found bool) {
	for _, g := range state.Domains() {
		e, ok := end.At(g.Domain)
		if !ok {
			continue
		}
		if g.Seq > e.Seq || g.Seq == e.Seq && g.Server != e.Server {
			return e, g, true
		}
	}
	return binlog.MariaDBGTID{}, binlog.MariaDBGTID{}, false
}

// stream sends events until the replica goes away or ctx ends.
func (d *dumper) stream(ctx context.Context) error {
	for {
		ev, err := d.feed.Next(ctx, false)
		if errors.Is(err, replicator.ErrWouldBlock) {
			if err := d.ss.bc.Flush(); err != nil {
				return err
			}
			if d.nonBlock {
				return d.eof()
			}
			ev, err = d.wait(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var he *replicator.HistoryError
			if errors.As(err, &he) {
				return fatal("%v", he) // a failover lost what this replica holds
			}
			return mysql.NewError(erUnknown, fmt.Sprintf("binvault cannot read its history now: %v", err))
		}
		if err := d.event(ev); err != nil {
			return err
		}
	}
}

// wait blocks for the next event, sending a heartbeat each period.
func (d *dumper) wait(ctx context.Context) (binlog.Event, error) {
	for {
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if d.hb > 0 {
			wctx, cancel = context.WithTimeout(ctx, d.hb)
		}
		ev, err := d.feed.Next(wctx, true)
		cancel()
		if err == nil || ctx.Err() != nil || d.hb == 0 || !errors.Is(err, context.DeadlineExceeded) {
			return ev, err
		}
		if d.file != "" {
			if err := d.write(heartbeatEvent(d.serverID, d.file, d.pos, d.crc)); err != nil {
				return binlog.Event{}, err
			}
		}
		if err := d.ss.bc.Flush(); err != nil {
			return binlog.Event{}, err
		}
	}
}

// event sends one event of the history, or skips it.
func (d *dumper) event(ev binlog.Event) error {
	if ev.Header.Type == replication.FORMAT_DESCRIPTION_EVENT {
		return d.segmentStart(ev)
	}
	role, err := d.grp.Feed(ev)
	if err != nil {
		return fatal("binvault's history is damaged: %v", err)
	}
	if role == binlog.Begin && !d.skip.IsZero() {
		if g, ok := eventGTID(ev); ok {
			if err := d.pass(g); err != nil {
				return err
			}
			d.skipping = d.skip.ContainsGTID(g.String())
		}
	}
	if d.skipping || d.startFile != "" && d.file == d.startFile && ev.Header.LogPos <= d.startPos {
		d.skipPos = ev.Header.LogPos
		d.skipped = true
		if role == binlog.End {
			d.skipping = false
			d.grp.Txn()
		}
		return nil
	}
	if d.skipped && !d.listedSkip && role == binlog.Begin && !d.skip.IsZero() {
		// As a primary does once it has passed the replica's position:
		// the replica's relay log position moves to where the stream is.
		d.listedSkip = true
		if err := d.write(gtidListEvent(d.serverID, d.skip.Domains(), d.skipPos, d.crc)); err != nil {
			return err
		}
	}
	if err := d.write(ev.Raw); err != nil {
		return err
	}
	if ev.Header.LogPos > 0 {
		d.pos = ev.Header.LogPos
	}
	if role == binlog.End {
		t := d.grp.Txn()
		d.sent.Add(t.GTID)
		d.ss.sentTxn(d.sent, time.Unix(int64(t.Time), 0))
	}
	return nil
}

// segmentStart handles a segment's format description: at a new binlog
// file of the primary, the rotate that names it and the file's format
// description; within the same file, nothing (a primary never sends a
// second one mid-file).
func (d *dumper) segmentStart(ev binlog.Event) error {
	if fdeChecksums(ev) != (d.ss.srv.checksumName() == "CRC32") {
		d.ss.srv.resetChecksum()
		return mysql.NewError(erUnknown, "the primary's binlog_checksum changed: reconnect")
	}
	seg := d.feed.Segment()
	if d.file == "" && !d.skip.IsZero() {
		// The first segment sent must start inside the replica's position
		// (NewFeed picks one so, unless the history was empty then).
		start, err := binlog.ParseGTIDSet(d.skip.Flavor(), seg.Start.GTIDSet)
		if err != nil {
			return fatal("segment %d: %v", seg.Seq, err)
		}
		if !d.skip.Contains(start) {
			return fatal("the replica's position %q is not in the history binvault holds: %s; rebuild the replica from a backup binvault holds (binvault restore) and start it from that backup's position", d.skip, d.coverage(d.ss.ctx))
		}
		for _, g := range start.Domains() {
			if err := d.pass(g); err != nil {
				return err
			}
		}
	}
	file := segmentFile(seg)
	if file == d.file {
		return nil
	}
	if err := d.write(rotateEvent(d.serverID, file, 4, d.rotateCRC)); err != nil {
		return err
	}
	d.rotateCRC = d.crc
	if err := d.write(replicaFDE(ev.Raw, d.crc)); err != nil {
		return err
	}
	d.file, d.pos = file, ev.Header.LogPos
	return nil
}

// segmentFile is the primary binlog file a segment's transactions are in
// (a segment never spans two).
func segmentFile(s archive.Segment) string {
	if s.End.File != "" {
		return s.End.File
	}
	return fmt.Sprintf("binvault-bin.%06d", s.Seq)
}

// eventGTID reads a MariaDB GTID event's transaction id.
func eventGTID(ev binlog.Event) (binlog.MariaDBGTID, bool) {
	if ev.Header.Type != replication.MARIADB_GTID_EVENT || len(ev.Raw) < binlog.HeaderSize+12 {
		return binlog.MariaDBGTID{}, false
	}
	b := ev.Raw[binlog.HeaderSize:]
	return binlog.MariaDBGTID{Seq: binary.LittleEndian.Uint64(b), Domain: binary.LittleEndian.Uint32(b[8:]), Server: ev.Header.ServerID}, true
}

// write sends one event: an OK byte, then the event.
func (d *dumper) write(raw []byte) error {
	d.pkt = append(d.pkt[:0], 0, 0, 0, 0, mysql.OK_HEADER)
	d.pkt = append(d.pkt, raw...)
	d.ss.raw.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := d.ss.conn.WritePacket(d.pkt); err != nil {
		return err
	}
	d.ss.srv.events.Add(1)
	d.ss.srv.bytes.Add(int64(len(raw)))
	d.ss.mu.Lock()
	d.ss.events++
	d.ss.bytes += int64(len(raw))
	d.ss.mu.Unlock()
	return nil
}

// eof ends a non-blocking dump (mariadb-binlog without --stop-never).
func (d *dumper) eof() error {
	d.pkt = append(d.pkt[:0], 0, 0, 0, 0, mysql.EOF_HEADER, 0, 0, 0, 0)
	if err := d.ss.conn.WritePacket(d.pkt); err != nil {
		return err
	}
	d.ss.bc.Flush()
	return errEOF
}

// errEOF: a non-blocking dump ended; the connection closes.
var errEOF = errors.New("end of the binlog")

func (ss *session) sentTxn(pos binlog.GTIDSet, commit time.Time) {
	ss.mu.Lock()
	ss.sent, ss.sentTime = pos.Clone(), commit
	ss.mu.Unlock()
}
