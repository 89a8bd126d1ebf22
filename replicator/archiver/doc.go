// Package archiver writes the archive: it uploads the spool's closed
// segments to the store in order, exactly once each, and keeps the catalog
// that lets readers find them (docs/archive-format.md §3–§5).
//
// It reads the spool through the small SegmentSource interface and writes
// through storage.Store, so it knows nothing of the primary, the replica or
// full backups. Every upload is create-if-absent: a retry after a crash,
// or a second binvault writing to the same prefix, can never replace what
// readers already trust; a different object under our number is an
// ErrConflict and stops the archiver (and the daemon) instead of
// overwriting history.
package archiver
