// Package replicator streams the primary's binlog into the spool and
// (with a replica configured) applies it to the replica.
//
// The spool is the local relay log between the stream and its consumers:
// segment files of whole transactions, each fsync'd before anyone sees it.
// The archiver (package replicator/archiver) uploads closed segments; the
// applier replays them to the replica, from the spool while it holds them
// and from the archive otherwise. Each consumer keeps its own position, so
// a slow or unreachable replica never stalls the archive and a slow store
// never stalls the replica.
package replicator
