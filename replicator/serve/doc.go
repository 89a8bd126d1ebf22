// Package serve is binvault's binlog server: it speaks the primary's side
// of MariaDB replication, so that any MariaDB 10.6+ server can
// CHANGE MASTER TO binvault with MASTER_USE_GTID=slave_pos and replicate
// natively, applying with its own parallel threads and keeping its
// position crash-safe in its own mysql.gtid_slave_pos.
//
// A replica reads a History: the spool and the archive while `binvault
// run` streams (Live), or the archive alone in another region, followed as
// new segments land (Archived, `binvault serve`). Each replica has its own
// feed and position; a slow or stalled one holds only its own connection.
//
// The protocol subset, from MariaDB's sql/sql_repl.cc and sql/slave.cc:
// a handshake that advertises a MariaDB 10.x version (below 10 a replica
// falls back to file positions); the answers to the queries the replica's
// IO thread sends before its dump; COM_REGISTER_SLAVE; COM_BINLOG_DUMP
// from @slave_connect_state (GTID mode) or from a file and position. The
// stream is, per primary binlog file, an artificial ROTATE naming it, its
// format description (create_timestamp cleared, as a primary does for a
// reconnecting replica), then whole transactions byte for byte as the
// primary wrote them (the groups a replica already has skipped, followed
// by a GTID_LIST of where it stands); heartbeats at the replica's
// @master_heartbeat_period while idle. A position binvault does not hold
// is refused with error 1236, as a primary refuses a purged one. docs/
// binlog-server.md describes it for operators.
package serve
