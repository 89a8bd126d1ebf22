package backup

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/config"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
)

// Options configure one backup.
type Options struct {
	// Parallel is the number of worker connections, each with its own
	// snapshot of the same instant (backup.parallel).
	Parallel int
	// ChunkBytes is the uncompressed SQL size at which a table's data
	// object is closed and the next begun (backup.chunk_size). Tables the
	// server estimates larger than this and that have a one-column integer
	// primary key are also read in primary-key ranges by several workers.
	ChunkBytes int64
	Log        *slog.Logger
	// Progress, when set, is updated as the backup runs.
	Progress *Progress
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Progress counts what the dump has done so far; safe to read while the
// backup runs.
type Progress struct {
	TablesTotal atomic.Int64
	TablesDone  atomic.Int64
	RowsTotal   atomic.Int64 // the server's estimate
	Rows        atomic.Int64
	Bytes       atomic.Int64 // uncompressed SQL
	StoredBytes atomic.Int64
	// Phase is "preparing", "snapshot", "dumping" or "finishing".
	Phase atomic.Value
}

// statementTarget is the size at which an INSERT statement is closed: big
// enough that a load spends its time in the engine rather than in round
// trips, small enough for any max_allowed_packet (default 16MiB). A single
// row larger than this makes a statement of its own.
const statementTarget = 1 << 20

// maxRanges bounds the primary-key ranges of one table.
const maxRanges = 10000

// Run takes one full backup of the server at dsn into st and returns its
// manifest. It checks the store and the server first (problems the user
// must fix are usage errors), takes the backup lock, deletes what
// interrupted backups left, and writes the manifest last.
func Run(ctx context.Context, st storage.Store, dsn dbconn.DSN, o Options) (m *Manifest, err error) {
	if o.Parallel <= 0 {
		o.Parallel = config.DefaultBackupParallel
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = int64(config.DefaultChunkSize)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	o.Progress.Phase.Store("preparing")
	start := o.Now().UTC()
	id := NewID(start)
	log := o.Log.With("backup", id)

	if ck, ok := st.(storage.Checker); ok {
		if err := ck.Check(ctx); err != nil {
			return nil, usage.Wrap(fmt.Errorf("storage: %w", err))
		}
	}
	db, err := openSource(ctx, dsn, o.Parallel+1)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	info, err := dbconn.Inspect(ctx, db)
	if err != nil {
		return nil, usage.Wrap(dbconn.Explain("source", dsn, err))
	}
	if !info.LogBin {
		return nil, usage.Errorf("source %s: the binary log is off: a backup needs log_bin to record the position the archive replays from", dsn)
	}
	control, err := db.Conn(ctx)
	if err != nil {
		return nil, usage.Wrap(dbconn.Explain("source", dsn, err))
	}
	defer control.Close()
	if err := checkPrivileges(ctx, control, info.Flavor, dsn); err != nil {
		return nil, err
	}

	lock, err := acquireLock(ctx, st, id, log)
	if err != nil {
		return nil, err
	}
	ctx, done := lock.guard(ctx, log, &err)
	defer done()
	if err := cleanLeftovers(ctx, st, id, log); err != nil {
		return nil, err
	}

	r := &run{id: id, st: st, o: &o, log: log, flavor: info.Flavor, start: start}
	defer func() {
		if err != nil {
			r.deleteWritten(log)
		}
	}()
	if err := r.dump(ctx, db, control); err != nil {
		return nil, err
	}
	m = r.manifest(info, dsn)
	m.EndTime = o.Now().UTC()
	o.Progress.Phase.Store("finishing")
	body, err := encodeJSON(m)
	if err != nil {
		return nil, err
	}
	if err := r.writeManifest(ctx, body); err != nil {
		return nil, err
	}
	log.Info("backup complete", "position", m.Position.String(), "tables", len(m.Tables), "rows", m.Rows,
		"bytes", m.Bytes, "stored_bytes", m.StoredBytes, "lock_held", time.Duration(m.LockHeldSeconds*float64(time.Second)).String(),
		"duration", m.EndTime.Sub(m.StartTime).Round(time.Millisecond).String())
	return m, nil
}

// writeManifest stores the manifest, the object that makes the backup
// exist. A failed write may still have landed (a lost reply, or S3's
// retried conditional PUT answering "exists"): the manifest is then looked
// up, and when its state stays unknown the data objects are kept, since
// deleting them under a manifest would leave a backup that cannot load.
func (r *run) writeManifest(ctx context.Context, body []byte) error {
	key := ManifestKey(r.id)
	_, err := r.st.PutIfAbsent(ctx, key, bytes.NewReader(body))
	if err == nil {
		r.manifestWritten = true
		return nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oi, serr := r.st.Stat(sctx, key)
	switch {
	case serr == nil && oi.SHA256 == sha256Hex(body):
		r.manifestWritten = true
		return nil
	case errors.Is(serr, storage.ErrNotFound):
		return fmt.Errorf("write the manifest: %w", err)
	}
	r.manifestWritten = true // unknown: keep the objects
	return fmt.Errorf("write the manifest %s: %w; whether it was stored is unknown (binvault backups will tell; an incomplete backup is cleaned up by the next one)", key, err)
}

// cleanLeftovers deletes the objects of earlier backups that never got a
// manifest. Holding the lock, nothing else writes under backups/.
func cleanLeftovers(ctx context.Context, st storage.Store, running string, log *slog.Logger) error {
	left, err := leftovers(ctx, st, running)
	if err != nil {
		return err
	}
	for id, keys := range left {
		log.Info("deleting the leftovers of an interrupted backup", "leftover", id, "objects", len(keys))
		for _, k := range keys {
			if err := st.Delete(ctx, k); err != nil {
				return fmt.Errorf("delete leftover %s: %w", k, err)
			}
		}
	}
	return cleanLockMarkers(ctx, st)
}

// run is one backup in progress.
type run struct {
	id     string
	st     storage.Store
	o      *Options
	log    *slog.Logger
	flavor string
	start  time.Time

	snap   *snapshotResult
	schema Object
	tables []*tableResult

	mu              sync.Mutex
	written         []string // keys, for cleanup on failure
	manifestWritten bool
	warnings        []string
}

type tableResult struct {
	info       *tableInfo
	consistent bool
	schemaOnly bool
	chunks     atomic.Int64
	pending    atomic.Int64 // tasks not done yet

	mu      sync.Mutex
	rows    int64
	bytes   int64
	stored  int64
	objects []Object
}

// task is one SELECT: a whole table or one primary-key range of it.
type task struct {
	table int
	where string
	est   int64
}

func (r *run) dump(ctx context.Context, db *sql.DB, control *sql.Conn) error {
	o := r.o
	workers := make([]*sql.Conn, o.Parallel)
	for i := range workers {
		c, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := session(ctx, c, r.flavor); err != nil {
			return err
		}
		workers[i] = c
	}
	if err := session(ctx, control, r.flavor); err != nil {
		return err
	}
	// Without binlogging in the dump sessions, ROLLBACK TO SAVEPOINT
	// releases a table's metadata lock once it is dumped, so DDL on it
	// need not wait for the whole backup (MariaDB keeps the locks while
	// the session binlogs). It needs BINLOG ADMIN (or SUPER); optional.
	releaseMDL := r.flavor == dbconn.MariaDB
	for _, c := range workers {
		if _, err := c.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
			releaseMDL = false
		}
	}
	if !releaseMDL && r.flavor == dbconn.MariaDB {
		r.log.Info("DDL on a table already dumped waits until the backup ends: grant BINLOG ADMIN to the backup user to let it go on")
	}
	if r.flavor == dbconn.MySQL {
		// Blocks DDL for the whole backup, so the definitions stay true to
		// the snapshot (untested, see snapshot.go).
		if _, err := control.ExecContext(ctx, "LOCK INSTANCE FOR BACKUP"); err != nil {
			return fmt.Errorf("LOCK INSTANCE FOR BACKUP: %w", err)
		}
		defer control.ExecContext(context.Background(), "UNLOCK INSTANCE")
		r.warnings = append(r.warnings, "MySQL backups are not tested by this binvault release (only MariaDB is): check a restore of this backup before relying on it")
	}

	o.Progress.Phase.Store("snapshot")
	snap, err := takeSnapshot(ctx, r.flavor, control, workers, o)
	if err != nil {
		return err
	}
	r.snap = snap
	r.log.Info("snapshot taken", "position", snap.position.String(), "lock_wait", snap.lockWait.String(), "lock_held", snap.lockHeld.String(),
		"tables", len(snap.schema.tables))
	r.warnings = append(r.warnings, snap.schema.warnings...)
	inconsistent, schemaOnly := engineWarnings(snap.schema.tables)
	if len(inconsistent) > 0 {
		r.warnings = append(r.warnings, "tables whose engine has no transactional snapshot, so their rows are as read during the dump rather than at the backup's position: "+strings.Join(inconsistent, ", "))
	}
	if len(schemaOnly) > 0 {
		r.warnings = append(r.warnings, "tables backed up without rows: "+strings.Join(schemaOnly, ", "))
	}
	for _, w := range r.warnings {
		r.log.Warn(w)
	}

	if err := r.writeSchema(ctx); err != nil {
		return err
	}
	tasks, err := r.plan(ctx, workers[0])
	if err != nil {
		return err
	}
	o.Progress.Phase.Store("dumping")
	err = r.runTasks(ctx, workers, tasks, releaseMDL)
	for _, c := range workers {
		c.ExecContext(context.Background(), "COMMIT")
	}
	return err
}

// plan turns the tables into tasks, largest first so that the last task
// to finish is a small one.
func (r *run) plan(ctx context.Context, c *sql.Conn) ([]task, error) {
	var tasks []task
	var rowsTotal int64
	for i, t := range r.snap.schema.tables {
		tr := &tableResult{info: t, consistent: consistentEngines[strings.ToUpper(t.engine)], objects: []Object{}}
		r.tables = append(r.tables, tr)
		if t.typ == "SEQUENCE" {
			tr.schemaOnly = true
			continue
		}
		if _, ok := schemaOnlyEngines[strings.ToUpper(t.engine)]; ok {
			tr.schemaOnly = true
			continue
		}
		if len(t.columns) == 0 {
			return nil, fmt.Errorf("table %s: no columns to dump", t.label())
		}
		// Each statement is one line of its object; a line break inside a
		// quoted identifier (MariaDB allows one) would cut it in two.
		names := []string{t.db, t.name}
		for _, c := range t.columns {
			names = append(names, c.name)
		}
		for _, n := range names {
			if strings.ContainsRune(n, '\n') {
				return nil, usage.Errorf("table %s: the name %q holds a line break, which binvault's backup format cannot carry: rename it", t.label(), n)
			}
		}
		ranges, err := r.split(ctx, c, t)
		if err != nil {
			return nil, err
		}
		for _, where := range ranges {
			tasks = append(tasks, task{table: i, where: where, est: t.dataLength / int64(len(ranges))})
		}
		tr.pending.Store(int64(len(ranges)))
		rowsTotal += t.tableRows
	}
	sort.SliceStable(tasks, func(i, j int) bool { return tasks[i].est > tasks[j].est })
	n := int64(0)
	for _, tr := range r.tables {
		if !tr.schemaOnly {
			n++
		}
	}
	r.o.Progress.TablesTotal.Store(n)
	r.o.Progress.RowsTotal.Store(rowsTotal)
	return tasks, nil
}

var integerTypes = map[string]bool{"tinyint": true, "smallint": true, "mediumint": true, "int": true, "integer": true, "bigint": true}

// split returns the WHERE clauses of a table's primary-key ranges, or one
// empty clause for the whole table.
func (r *run) split(ctx context.Context, c *sql.Conn, t *tableInfo) ([]string, error) {
	whole := []string{""}
	if t.dataLength <= r.o.ChunkBytes || len(t.pk) != 1 || !integerTypes[t.pkType] {
		return whole, nil
	}
	pk := dbconn.QuoteIdent(t.pk[0])
	var lo, hi sql.NullString
	q := "SELECT MIN(" + pk + "), MAX(" + pk + ") FROM " + dbconn.QuoteIdent(t.db) + "." + dbconn.QuoteIdent(t.name)
	if err := c.QueryRowContext(ctx, q).Scan(&lo, &hi); err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	if !lo.Valid || !hi.Valid {
		return whole, nil // empty
	}
	minV, ok1 := new(big.Int).SetString(lo.String, 10)
	maxV, ok2 := new(big.Int).SetString(hi.String, 10)
	if !ok1 || !ok2 {
		return whole, nil
	}
	span := new(big.Int).Sub(maxV, minV)
	span.Add(span, big.NewInt(1))
	k := (t.dataLength + r.o.ChunkBytes - 1) / r.o.ChunkBytes
	k = min(k, maxRanges)
	if span.IsInt64() && span.Int64() < k {
		k = span.Int64()
	}
	if k <= 1 {
		return whole, nil
	}
	bounds := make([]string, 0, k-1)
	for i := int64(1); i < k; i++ {
		b := new(big.Int).Mul(span, big.NewInt(i))
		b.Quo(b, big.NewInt(k))
		b.Add(b, minV)
		bounds = append(bounds, b.String())
	}
	out := make([]string, 0, k)
	for i := 0; i <= len(bounds); i++ {
		var cond []string
		if i > 0 {
			cond = append(cond, pk+" >= "+bounds[i-1])
		}
		if i < len(bounds) {
			cond = append(cond, pk+" < "+bounds[i])
		}
		out = append(out, " WHERE "+strings.Join(cond, " AND "))
	}
	return out, nil
}

func (r *run) writeSchema(ctx context.Context) error {
	raw, err := encodeJSON(Schema{Format: FormatVersion, Definitions: r.snap.schema.defs})
	if err != nil {
		return err
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	packed := enc.EncodeAll(raw, nil)
	enc.Close()
	key := SchemaKey(r.id)
	r.track(key)
	info, err := r.st.Put(ctx, key, bytes.NewReader(packed))
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	r.schema = Object{Key: key, Bytes: int64(len(raw)), StoredBytes: info.Size, SHA256: info.SHA256}
	r.o.Progress.StoredBytes.Add(info.Size)
	return nil
}

func (r *run) track(key string) {
	r.mu.Lock()
	r.written = append(r.written, key)
	r.mu.Unlock()
}

// deleteWritten removes what a failed backup wrote, best effort: what is
// left is deleted by the next backup.
func (r *run) deleteWritten(log *slog.Logger) {
	if r.manifestWritten {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.mu.Lock()
	keys := append([]string(nil), r.written...)
	r.mu.Unlock()
	for _, k := range keys {
		if err := r.st.Delete(ctx, k); err != nil {
			log.Warn("could not delete the objects of the failed backup; the next backup deletes them", "err", err)
			return
		}
	}
}

func (r *run) runTasks(ctx context.Context, conns []*sql.Conn, tasks []task, releaseMDL bool) error {
	ch := make(chan task)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, c := range conns {
		w := &worker{run: r, conn: c, releaseMDL: releaseMDL}
		w.enc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.enc.Close()
			for t := range ch {
				if err := w.do(ctx, t); err != nil {
					cancel(err)
					for range ch {
					}
					return
				}
			}
		}()
	}
feed:
	for _, t := range tasks {
		select {
		case ch <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// worker dumps tasks on one connection inside its snapshot.
type worker struct {
	run        *run
	conn       *sql.Conn
	enc        *zstd.Encoder
	releaseMDL bool
	buf        []byte // the statement being built
}

func (w *worker) do(ctx context.Context, t task) error {
	tr := w.run.tables[t.table]
	if w.releaseMDL {
		if _, err := w.conn.ExecContext(ctx, "SAVEPOINT binvault"); err != nil {
			return err
		}
	}
	err := w.dumpTask(ctx, tr, t)
	if err != nil {
		return fmt.Errorf("dump %s: %w", tr.info.label(), explainDumpError(err))
	}
	if w.releaseMDL {
		if _, err := w.conn.ExecContext(ctx, "ROLLBACK TO SAVEPOINT binvault"); err != nil {
			return err
		}
	}
	if tr.pending.Add(-1) == 0 {
		w.run.o.Progress.TablesDone.Add(1)
	}
	return nil
}

func explainDumpError(err error) error {
	if dbconn.IsTableChanged(err) {
		_, msg, _ := dbconn.ServerError(err)
		return fmt.Errorf("the table was changed by DDL during the backup (%s): run the backup again, away from schema changes", msg)
	}
	return err
}

// colDest renders a column's value straight into the statement as
// database/sql hands it over, without an intermediate copy.
type colDest struct {
	w     *worker
	kind  valueKind
	first bool
}

func (d *colDest) Scan(src any) error {
	if !d.first {
		d.w.buf = append(d.w.buf, ',')
	}
	var err error
	d.w.buf, err = appendValue(d.w.buf, d.kind, src)
	return err
}

func (w *worker) dumpTask(ctx context.Context, tr *tableResult, t task) error {
	ti := tr.info
	cols := make([]string, len(ti.columns))
	for i, c := range ti.columns {
		cols[i] = dbconn.QuoteIdent(c.name)
	}
	table := dbconn.QuoteIdent(ti.db) + "." + dbconn.QuoteIdent(ti.name)
	colList := strings.Join(cols, ",")
	// A prepared statement, for the binary protocol: floats arrive as
	// their IEEE bits rather than as the server's rounded text.
	from := table
	if ti.history {
		from += " FOR SYSTEM_TIME ALL"
	}
	stmt, err := w.conn.PrepareContext(ctx, "SELECT "+colList+" FROM "+from+t.where)
	if err != nil {
		return err
	}
	defer stmt.Close()
	rows, err := stmt.QueryContext(ctx)
	if err != nil {
		return err
	}
	defer rows.Close()
	dest := make([]any, len(ti.columns))
	for i, c := range ti.columns {
		dest[i] = &colDest{w: w, kind: c.kind, first: i == 0}
	}
	prefix := "INSERT INTO " + table + " (" + colList + ") VALUES "
	prog := w.run.o.Progress
	var (
		obj      *objectWriter
		stmtRows int64
		inStmt   bool
	)
	flush := func() error {
		w.buf = append(w.buf, ";\n"...)
		if err := obj.write(w.enc, w.buf, stmtRows); err != nil {
			return err
		}
		prog.Rows.Add(stmtRows)
		prog.Bytes.Add(int64(len(w.buf)))
		inStmt, stmtRows = false, 0
		if obj.bytes >= w.run.o.ChunkBytes {
			o, err := obj.finish(w.enc)
			// finish consumed the upload's result, failed or not: the
			// deferred abort must not wait for it again (it hung a backup
			// cancelled mid-object, e.g. by the daemon's shutdown).
			obj = nil
			if err != nil {
				return err
			}
			tr.add(o)
			prog.StoredBytes.Add(o.StoredBytes)
		}
		return nil
	}
	defer func() {
		if obj != nil {
			obj.abort(errors.New("dump stopped"))
		}
	}()
	for rows.Next() {
		if obj == nil {
			key := dataKey(w.run.id, t.table, int(tr.chunks.Add(1)), ti.db, ti.name)
			w.run.track(key)
			obj = startObject(ctx, w.run.st, w.enc, key)
		}
		if inStmt {
			w.buf = append(w.buf, ',')
		} else {
			w.buf = append(w.buf[:0], prefix...)
			inStmt = true
		}
		w.buf = append(w.buf, '(')
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		w.buf = append(w.buf, ')')
		stmtRows++
		if len(w.buf) >= statementTarget {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if inStmt {
		if err := flush(); err != nil {
			return err
		}
	}
	if obj != nil {
		o, err := obj.finish(w.enc)
		obj = nil
		if err != nil {
			return err
		}
		tr.add(o)
		prog.StoredBytes.Add(o.StoredBytes)
	}
	if cap(w.buf) > 4*statementTarget {
		w.buf = nil // a huge row passed: do not keep its buffer
	}
	return nil
}

func (tr *tableResult) add(o Object) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.objects = append(tr.objects, o)
	tr.rows += o.Rows
	tr.bytes += o.Bytes
	tr.stored += o.StoredBytes
}

// objectWriter streams one data object: statements → zstd → pipe → Put.
type objectWriter struct {
	key     string
	pw      *io.PipeWriter
	done    chan putResult
	bytes   int64
	rows    int64
	maxStmt int64
}

type putResult struct {
	info storage.ObjectInfo
	err  error
}

func startObject(ctx context.Context, st storage.Store, enc *zstd.Encoder, key string) *objectWriter {
	pr, pw := io.Pipe()
	ow := &objectWriter{key: key, pw: pw, done: make(chan putResult, 1)}
	go func() {
		info, err := st.Put(ctx, key, pr)
		if err == nil {
			err = io.ErrClosedPipe
		} else {
			err = fmt.Errorf("write %s: %w", key, err)
		}
		pr.CloseWithError(err)
		if errors.Is(err, io.ErrClosedPipe) {
			err = nil
		}
		ow.done <- putResult{info, err}
	}()
	enc.Reset(pw)
	return ow
}

func (ow *objectWriter) write(enc *zstd.Encoder, stmt []byte, rows int64) error {
	if _, err := enc.Write(stmt); err != nil {
		return err
	}
	ow.bytes += int64(len(stmt))
	ow.rows += rows
	ow.maxStmt = max(ow.maxStmt, int64(len(stmt)))
	return nil
}

func (ow *objectWriter) finish(enc *zstd.Encoder) (Object, error) {
	if err := enc.Close(); err != nil {
		ow.abort(err)
		return Object{}, err
	}
	ow.pw.Close()
	res := <-ow.done
	if res.err != nil {
		return Object{}, res.err
	}
	return Object{Key: ow.key, Rows: ow.rows, Bytes: ow.bytes, StoredBytes: res.info.Size, SHA256: res.info.SHA256, MaxStatementBytes: ow.maxStmt}, nil
}

// abort makes the upload fail, so nothing of the object becomes visible.
func (ow *objectWriter) abort(err error) {
	ow.pw.CloseWithError(err)
	<-ow.done
}

func (r *run) manifest(info dbconn.ServerInfo, dsn dbconn.DSN) *Manifest {
	m := &Manifest{
		Format:          FormatVersion,
		ID:              r.id,
		Complete:        true,
		Source:          archive.Source{Flavor: info.Flavor, Version: info.Version, ServerID: info.ServerID, Hostname: dsn.Host, Port: dsn.Port},
		Method:          MethodMariaDB,
		StartTime:       r.start,
		SnapshotTime:    r.snap.snapshotTime,
		LockWaitSeconds: r.snap.lockWait.Seconds(),
		LockHeldSeconds: r.snap.lockHeld.Seconds(),
		Position:        r.snap.position,
		Parallel:        r.o.Parallel,
		ChunkBytes:      r.o.ChunkBytes,
		Schema:          r.schema,
		Databases:       r.snap.schema.dbs,
		Tables:          []Table{},
		StoredBytes:     r.schema.StoredBytes,
		Warnings:        r.warnings,
	}
	if r.flavor == dbconn.MySQL {
		m.Method = MethodMySQL
	}
	if m.Databases == nil {
		m.Databases = []string{}
	}
	for _, tr := range r.tables {
		t := Table{Database: tr.info.db, Name: tr.info.name, Engine: tr.info.engine, Consistent: tr.consistent, SchemaOnly: tr.schemaOnly,
			Rows: tr.rows, Bytes: tr.bytes, StoredBytes: tr.stored, Objects: tr.objects}
		// Objects in key order, so manifests of equal backups compare equal.
		sort.Slice(t.Objects, func(i, j int) bool { return t.Objects[i].Key < t.Objects[j].Key })
		for _, o := range t.Objects {
			m.MaxStatementBytes = max(m.MaxStatementBytes, o.MaxStatementBytes)
		}
		m.Rows += t.Rows
		m.Bytes += t.Bytes
		m.StoredBytes += t.StoredBytes
		m.Tables = append(m.Tables, t)
	}
	return m
}
