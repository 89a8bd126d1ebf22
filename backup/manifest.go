package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
)

// Layout of backups in the store (docs/archive-format.md, "Backups"):
//
//	backups/<id>/schema.json.zst            definitions (Schema), zstd
//	backups/<id>/data/<t>.<c>.<label>.sql.zst  INSERT statements, zstd
//	backups/<id>/manifest.json              written last (Manifest)
//	backups/lock.json                       the backup lock (lock.go)
const (
	Prefix       = "backups/"
	manifestName = "manifest.json"
	schemaName   = "schema.json.zst"
	// FormatVersion is written into every manifest and schema object.
	FormatVersion = 1
)

// ManifestKey is the object whose presence makes backup id exist.
func ManifestKey(id string) string { return Prefix + id + "/" + manifestName }

// SchemaKey is the backup's definitions object.
func SchemaKey(id string) string { return Prefix + id + "/" + schemaName }

// dataKey names chunk c of table t. Readers never derive keys: they take
// them from the manifest, so the label is only for people browsing the
// store; the numbers make the key unique whatever the names hold.
func dataKey(id string, t, c int, db, table string) string {
	label := escapeName(db) + "." + escapeName(table)
	if len(label) > 120 {
		label = label[:120]
		// Never cut an escape sequence in two.
		if i := strings.LastIndexByte(label, '%'); i >= len(label)-2 {
			label = label[:i]
		}
	}
	return fmt.Sprintf("%s%s/data/%05d.%06d.%s.sql.zst", Prefix, id, t, c, label)
}

// escapeName keeps [A-Za-z0-9_$-] and percent-encodes every other byte,
// so any identifier becomes a valid, unambiguous key fragment.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '$', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// NewID returns a backup id that sorts by time: UTC start time to the
// second and 6 random hex digits, e.g. 20261128T101500Z-3fa9c2.
func NewID(now time.Time) string {
	var r [3]byte
	rand.Read(r[:])
	return now.UTC().Format(idTimeLayout) + "-" + hex.EncodeToString(r[:])
}

const idTimeLayout = "20060102T150405Z"

// ParseID returns the time encoded in a backup id.
func ParseID(id string) (time.Time, bool) {
	ts, suffix, ok := strings.Cut(id, "-")
	if !ok || len(suffix) != 6 || len(ts) != len(idTimeLayout) {
		return time.Time{}, false
	}
	if _, err := hex.DecodeString(suffix); err != nil || strings.ToLower(suffix) != suffix {
		return time.Time{}, false
	}
	t, err := time.Parse(idTimeLayout, ts)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// Manifest describes one complete backup. It is written after every
// other object of the backup; a backup without one does not exist.
type Manifest struct {
	Format   int            `json:"format"`
	ID       string         `json:"id"`
	Complete bool           `json:"complete"` // always true: an incomplete backup has no manifest
	Source   archive.Source `json:"source"`
	// Method says how the instant was taken: "mariadb-backup-stage" or
	// "mysql-ftwrl".
	Method string `json:"method"`

	StartTime time.Time `json:"start_time"`
	EndTime   time.Time `json:"end_time"`
	// SnapshotTime is when every worker's snapshot was taken, commits held.
	SnapshotTime time.Time `json:"snapshot_time"`
	// LockWaitSeconds is how long taking the commit lock took (commits on
	// the primary may queue behind the request meanwhile);
	// LockHeldSeconds is how long commits were then blocked.
	LockWaitSeconds float64 `json:"lock_wait_seconds"`
	LockHeldSeconds float64 `json:"lock_held_seconds"`

	// Position is the primary's position at the snapshot: replaying the
	// binlog from here onto the loaded backup reproduces the primary.
	Position binlog.Position `json:"position"`

	Parallel   int   `json:"parallel"`
	ChunkBytes int64 `json:"chunk_bytes"`

	Schema    Object   `json:"schema"`
	Databases []string `json:"databases"`
	Tables    []Table  `json:"tables"`

	Rows        int64 `json:"rows"`
	Bytes       int64 `json:"bytes"`        // uncompressed SQL of every data object
	StoredBytes int64 `json:"stored_bytes"` // every object's stored content, schema included
	// MaxStatementBytes is the longest statement in any data object: the
	// target's max_allowed_packet must be at least this.
	MaxStatementBytes int64    `json:"max_statement_bytes"`
	Warnings          []string `json:"warnings,omitempty"`
}

// Table is one table's share of the backup.
type Table struct {
	Database string `json:"database"`
	Name     string `json:"name"`
	Engine   string `json:"engine"`
	// Consistent is false for tables whose engine has no MVCC snapshot
	// (MyISAM, Aria, MEMORY...): their rows are from during the dump.
	Consistent bool `json:"consistent"`
	// SchemaOnly: data not dumped (it lives elsewhere: FEDERATED, CONNECT,
	// SPIDER, MRG_MyISAM; or there is none: BLACKHOLE, sequences).
	SchemaOnly  bool     `json:"schema_only,omitempty"`
	Rows        int64    `json:"rows"`
	Bytes       int64    `json:"bytes"`
	StoredBytes int64    `json:"stored_bytes"`
	Objects     []Object `json:"objects"`
}

// Object is one stored object of the backup.
type Object struct {
	Key         string `json:"key"`
	Rows        int64  `json:"rows,omitempty"`
	Bytes       int64  `json:"bytes"`        // content after zstd decompression
	StoredBytes int64  `json:"stored_bytes"` // stored content (compressed), without trailer
	SHA256      string `json:"sha256"`       // of the stored content; equals its trailer's digest
	// MaxStatementBytes is the longest statement in this object.
	MaxStatementBytes int64 `json:"max_statement_bytes,omitempty"`
}

// Objects lists every object of the backup but the manifest, schema first.
func (m *Manifest) Objects() []Object {
	out := []Object{m.Schema}
	for _, t := range m.Tables {
		out = append(out, t.Objects...)
	}
	return out
}

// Schema is the content of schema.json.zst: every definition, in the
// order a loader creates them (see Definition.Phase).
type Schema struct {
	Format      int          `json:"format"`
	Definitions []Definition `json:"definitions"`
}

// Definition kinds.
const (
	KindDatabase = "database"
	KindTable    = "table"
	KindSequence = "sequence"
	KindSetval   = "sequence_value" // SELECT SETVAL(...) restoring a sequence's next value
	KindRoutine  = "routine"
	KindView     = "view"
	KindTrigger  = "trigger"
	KindEvent    = "event"
)

// Definition is one statement that recreates a schema object, with the
// session settings it must run under.
type Definition struct {
	Kind     string `json:"kind"`
	Database string `json:"database,omitempty"`
	Name     string `json:"name"`
	// SQL is the statement when it is valid UTF-8; SQLBase64 otherwise
	// (a default value or comment in a legacy charset), so JSON never
	// alters a byte.
	SQL       string `json:"sql,omitempty"`
	SQLBase64 []byte `json:"sql_base64,omitempty"`
	// Session settings the statement ran under on the source; empty means
	// the loader's defaults.
	SQLMode             *string `json:"sql_mode,omitempty"`
	TimeZone            string  `json:"time_zone,omitempty"`
	CharacterSetClient  string  `json:"character_set_client,omitempty"`
	CollationConnection string  `json:"collation_connection,omitempty"`
	DatabaseCollation   string  `json:"database_collation,omitempty"`
}

// Statement returns the definition's SQL text, whichever field holds it.
func (d Definition) Statement() []byte {
	if d.SQLBase64 != nil {
		return d.SQLBase64
	}
	return []byte(d.SQL)
}

func newDefinition(kind, db, name string, stmt []byte) Definition {
	d := Definition{Kind: kind, Database: db, Name: name}
	if utf8.Valid(stmt) {
		d.SQL = string(stmt)
	} else {
		d.SQLBase64 = bytes.Clone(stmt)
	}
	return d
}

// PostData reports whether a definition is created after the data is
// loaded: triggers must not fire on loaded rows, and views, routines and
// events may refer to anything.
func (d Definition) PostData() bool {
	switch d.Kind {
	case KindDatabase, KindTable, KindSequence:
		return false
	}
	return true
}

// ReadManifest fetches and checks one backup's manifest. A missing
// manifest is an error wrapping storage.ErrNotFound: the backup does not exist.
func ReadManifest(ctx context.Context, st storage.Store, id string) (*Manifest, error) {
	b, err := storage.ReadAll(ctx, st, ManifestKey(id))
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("backup %s does not exist in %s (no %s): %w", id, st, ManifestKey(id), err)
		}
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", ManifestKey(id), err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("manifest %s has format %d; this binvault reads format %d: upgrade binvault", ManifestKey(id), m.Format, FormatVersion)
	}
	if m.ID != id {
		return nil, fmt.Errorf("manifest %s names backup %q", ManifestKey(id), m.ID)
	}
	return &m, nil
}

// ReadSchema fetches a backup's definitions, checking the object against
// the manifest's digest.
func ReadSchema(ctx context.Context, st storage.Store, m *Manifest) (*Schema, error) {
	b, err := ReadObject(ctx, st, m.Schema)
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var s Schema
	if err := json.NewDecoder(dec).Decode(&s); err != nil {
		return nil, fmt.Errorf("schema %s: %w", m.Schema.Key, err)
	}
	if s.Format != FormatVersion {
		return nil, fmt.Errorf("schema %s has format %d; this binvault reads format %d: upgrade binvault", m.Schema.Key, s.Format, FormatVersion)
	}
	return &s, nil
}

// maxObjectBytes bounds a backup object's stored size: a data object
// holds backup.chunk_size (at most 1 GiB) of SQL, plus one row, compressed.
const maxObjectBytes = 2 << 30

// preallocBytes is the most ReadObject allocates before reading.
const preallocBytes = 64 << 20

// ReadObject reads a whole object of a backup into memory and checks it
// against both its trailer (the store does) and the manifest's size and
// digest, so nothing from a damaged or substituted object is ever used.
func ReadObject(ctx context.Context, st storage.Store, o Object) ([]byte, error) {
	// The manifest's size comes from the store, as the object does: it
	// bounds what is read, but never decides an allocation by itself.
	if o.StoredBytes < 0 || o.StoredBytes > maxObjectBytes {
		return nil, &storage.ChecksumError{Key: o.Key, Reason: fmt.Sprintf("the manifest records %d stored bytes: an object holds 0 to %d", o.StoredBytes, int64(maxObjectBytes))}
	}
	rc, err := st.Get(ctx, o.Key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := bytes.NewBuffer(make([]byte, 0, min(o.StoredBytes, preallocBytes)+bytes.MinRead))
	// One byte more than recorded tells a longer object from an exact one.
	if _, err := buf.ReadFrom(io.LimitReader(rc, o.StoredBytes+1)); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if int64(len(b)) != o.StoredBytes {
		return nil, &storage.ChecksumError{Key: o.Key, Reason: fmt.Sprintf("%d bytes stored, the manifest records %d", len(b), o.StoredBytes)}
	}
	if got := sha256Hex(b); got != o.SHA256 {
		return nil, &storage.ChecksumError{Key: o.Key, Want: o.SHA256, Got: got, Reason: "content differs from the digest the manifest records"}
	}
	return b, nil
}

// List returns the manifests of every complete backup, oldest first.
// Objects under backups/<id>/ without a manifest (an interrupted or
// running backup) are not backups and are left out.
func List(ctx context.Context, st storage.Store) ([]*Manifest, error) {
	ids, err := listIDs(ctx, st)
	if err != nil {
		return nil, err
	}
	var out []*Manifest
	for _, id := range ids {
		if !id.hasManifest {
			continue
		}
		m, err := ReadManifest(ctx, st, id.id)
		if errors.Is(err, storage.ErrNotFound) {
			continue // deleted since it was listed (retention): no longer a backup
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

type listedID struct {
	id          string
	hasManifest bool
	keys        []string // every key below backups/<id>/, when collected
}

// listIDs finds the backup ids in the store. With a store that can list
// from a key server-side (S3) it skips over each backup's data objects,
// one request per backup; otherwise it walks the prefix.
func listIDs(ctx context.Context, st storage.Store) ([]listedID, error) {
	var out []listedID
	add := func(key string) {
		rest := strings.TrimPrefix(key, Prefix)
		id, name, ok := strings.Cut(rest, "/")
		if !ok {
			return
		}
		if _, valid := ParseID(id); !valid {
			return
		}
		if len(out) == 0 || out[len(out)-1].id != id {
			out = append(out, listedID{id: id})
		}
		if name == manifestName {
			out[len(out)-1].hasManifest = true
		}
	}
	if _, ok := st.(storage.AfterLister); !ok {
		err := st.List(ctx, Prefix, func(oi storage.ObjectInfo) error { add(oi.Key); return nil })
		if err != nil {
			return nil, fmt.Errorf("list backups: %w", err)
		}
		return out, nil
	}
	after := ""
	for {
		var first string
		err := storage.ListAfter(ctx, st, Prefix, after, func(oi storage.ObjectInfo) error {
			first = oi.Key
			return errStopList
		})
		if err != nil && !errors.Is(err, errStopList) {
			return nil, fmt.Errorf("list backups: %w", err)
		}
		if first == "" {
			return out, nil
		}
		rest := strings.TrimPrefix(first, Prefix)
		id, _, ok := strings.Cut(rest, "/")
		if !ok {
			after = first // a key directly under backups/ (the lock)
			continue
		}
		if _, valid := ParseID(id); valid {
			if _, err := st.Stat(ctx, ManifestKey(id)); err == nil {
				out = append(out, listedID{id: id, hasManifest: true})
			} else if errors.Is(err, storage.ErrNotFound) {
				out = append(out, listedID{id: id})
			} else {
				return nil, err
			}
		}
		// "0" sorts right after "/": the next key is past this id's objects.
		after = Prefix + id + "0"
	}
}

var errStopList = errors.New("stop listing")

// leftovers lists the objects of backups that have no manifest, other
// than the running one. The caller holds the backup lock, so no other
// backup is writing: every such backup was interrupted. (Comparing ids
// instead would miss a leftover from the same second.)
func leftovers(ctx context.Context, st storage.Store, running string) (map[string][]string, error) {
	out := map[string][]string{}
	err := st.List(ctx, Prefix, func(oi storage.ObjectInfo) error {
		id, _, ok := strings.Cut(strings.TrimPrefix(oi.Key, Prefix), "/")
		if !ok {
			return nil
		}
		if _, valid := ParseID(id); !valid || id == running {
			return nil
		}
		out[id] = append(out[id], oi.Key)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	for id, keys := range out {
		for _, k := range keys {
			if k == ManifestKey(id) {
				delete(out, id)
				break
			}
		}
	}
	return out, nil
}

func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
