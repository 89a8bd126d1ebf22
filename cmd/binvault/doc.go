// Command binvault streams, archives, backs up and restores MySQL/MariaDB.
//
// The package holds two things. The command line: one file per subcommand
// (cmd_*.go) that reads flags and configuration, calls the packages that do
// the work (replicator, replicator/archiver, backup, restore, storage) and
// maps their errors to exit codes: 0 success, 1 operational failure, 2
// usage or configuration error. And the daemon that `binvault run` starts
// (cmd_run.go, schedule.go, state.go): it composes the stream, the spool,
// the archiver, the replica applier and the backup schedule, serves
// /metrics, /healthz and /readyz, and writes the state file that `binvault
// status` reads. The daemon has no logic of its own beyond starting,
// stopping and reporting those parts.
package main
