// Package restore brings a server back to a point in time from the store
// alone: the primary may be gone. MakePlan picks the newest backup that the
// archive can roll forward to the target (a time, a GTID, just before a
// GTID, or the latest archived transaction) and the segments that do it;
// Find lists the archived transactions that touched a table, to choose
// such a point.
//
// Run then loads the backup (LoadBackup: definitions, then the data objects
// in parallel, then views, routines, triggers and events) and replays the
// segments after the backup's position up to the target, with the same
// exact replay as the replica: row events are applied by the server
// itself, many source transactions share one target commit, and every
// object is verified whole before any of it is applied.
//
// An interrupted restore resumes (--resume) from what the target itself
// records in the state database, binvault_restore: which backup and target
// the restore is for, whether it is loading or replaying, the data objects
// already loaded (each recorded inside the transaction that loaded it), and
// the GTID position the replay has committed (recorded inside each group's
// commit). It is written with the target's binlog off where the user may,
// and dropped when the restore completes.
package restore
