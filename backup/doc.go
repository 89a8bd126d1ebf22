// Package backup takes full, consistent logical backups of the primary
// (tied to an exact binlog position, docs/archive-format.md §7) and applies
// retention: it deletes the backups the policy no longer keeps and the
// segments that only they needed. The continuous archive of segments is the
// archiver's (package replicator/archiver); retention shares only the
// archive's layout with it (package internal/archive).
package backup
