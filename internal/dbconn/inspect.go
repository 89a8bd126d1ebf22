package dbconn

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Flavors.
const (
	MariaDB = "mariadb"
	MySQL   = "mysql"
)

// ServerInfo is what binvault needs to know about a server before it
// streams from it, applies to it, backs it up or restores into it.
type ServerInfo struct {
	Version           string `json:"version"`
	Flavor            string `json:"flavor"`
	ServerID          uint32 `json:"server_id"`
	LogBin            bool   `json:"log_bin"`
	BinlogFormat      string `json:"binlog_format"`
	BinlogRowImage    string `json:"binlog_row_image"`
	BinlogRowMetadata string `json:"binlog_row_metadata,omitempty"`
	BinlogChecksum    string `json:"binlog_checksum"`
	GTIDMode          string `json:"gtid_mode"`     // MySQL: OFF/ON...; MariaDB: always "ON" (GTIDs are built in)
	GTIDPosition      string `json:"gtid_position"` // MariaDB @@gtid_binlog_pos, MySQL @@gtid_executed
	GTIDStrictMode    bool   `json:"gtid_strict_mode,omitempty"`
	ReadOnly          bool   `json:"read_only"`
	// The primary's semi-synchronous replication (rpl_semi_sync_master_*,
	// which MySQL 8.0.26 renamed rpl_semi_sync_source_*); SemiSyncEnabled
	// is "" when the server has none.
	SemiSyncEnabled   string `json:"semi_sync_enabled,omitempty"`
	SemiSyncWaitPoint string `json:"semi_sync_wait_point,omitempty"`
	SemiSyncTimeoutMS int64  `json:"semi_sync_timeout_ms,omitempty"`
}

// Inspect reads the server's identity and binlog settings.
func Inspect(ctx context.Context, db *sql.DB) (ServerInfo, error) {
	var si ServerInfo
	var version string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return si, err
	}
	si.Version = version
	si.Flavor = MySQL
	if strings.Contains(strings.ToLower(version), "mariadb") {
		si.Flavor = MariaDB
	}
	vars := map[string]string{}
	rows, err := db.QueryContext(ctx, `SHOW GLOBAL VARIABLES WHERE Variable_name IN
		('server_id','log_bin','binlog_format','binlog_row_image','binlog_row_metadata','binlog_checksum',
		 'gtid_mode','gtid_binlog_pos','gtid_executed','gtid_strict_mode','read_only',
		 'rpl_semi_sync_master_enabled','rpl_semi_sync_master_wait_point','rpl_semi_sync_master_timeout',
		 'rpl_semi_sync_source_enabled','rpl_semi_sync_source_wait_point','rpl_semi_sync_source_timeout')`)
	if err != nil {
		return si, err
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return si, err
		}
		vars[strings.Replace(k, "_source_", "_master_", 1)] = v
	}
	if err := rows.Err(); err != nil {
		return si, err
	}
	fmt.Sscan(vars["server_id"], &si.ServerID)
	si.LogBin = vars["log_bin"] == "ON"
	si.BinlogFormat = vars["binlog_format"]
	si.BinlogRowImage = vars["binlog_row_image"]
	si.BinlogRowMetadata = vars["binlog_row_metadata"]
	si.BinlogChecksum = vars["binlog_checksum"]
	si.ReadOnly = vars["read_only"] == "ON"
	si.SemiSyncEnabled = vars["rpl_semi_sync_master_enabled"]
	si.SemiSyncWaitPoint = vars["rpl_semi_sync_master_wait_point"]
	fmt.Sscan(vars["rpl_semi_sync_master_timeout"], &si.SemiSyncTimeoutMS)
	if si.Flavor == MariaDB {
		si.GTIDMode = "ON"
		si.GTIDPosition = vars["gtid_binlog_pos"]
		si.GTIDStrictMode = vars["gtid_strict_mode"] == "ON"
	} else {
		si.GTIDMode = vars["gtid_mode"]
		si.GTIDPosition = strings.ReplaceAll(vars["gtid_executed"], "\n", "")
	}
	return si, nil
}

// MinSemiSyncTimeout is the rpl_semi_sync_master_timeout below which
// binvault warns: an fsync or a store upload that takes longer makes the
// primary stop waiting.
const MinSemiSyncTimeout = time.Second

// SemiSyncProblems checks the primary's side of semi-synchronous
// replication for binvault in mode (spool or store). A problem keeps
// commits from waiting for binvault at all; a warning weakens what the
// wait guarantees. Each names the SET GLOBAL that fixes it.
func (si ServerInfo) SemiSyncProblems(mode string) (problems, warnings []string) {
	if si.SemiSyncEnabled == "" {
		return []string{fmt.Sprintf("the server has no semi-synchronous replication (no rpl_semi_sync_master_enabled; MySQL: INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'), but source.semi_sync is %s: install it or set source.semi_sync: off", mode)}, nil
	}
	if si.SemiSyncEnabled != "ON" {
		problems = append(problems, fmt.Sprintf("rpl_semi_sync_master_enabled is %s, so commits will not wait for binvault (source.semi_sync: %s): run SET GLOBAL rpl_semi_sync_master_enabled=ON on the primary and add rpl_semi_sync_master_enabled=ON to its option file", si.SemiSyncEnabled, mode))
	}
	if si.SemiSyncWaitPoint != "" && si.SemiSyncWaitPoint != "AFTER_SYNC" {
		warnings = append(warnings, fmt.Sprintf("rpl_semi_sync_master_wait_point is %s: other clients can read a transaction before binvault holds it, and a crash of the primary then loses what they read; run SET GLOBAL rpl_semi_sync_master_wait_point=AFTER_SYNC", si.SemiSyncWaitPoint))
	}
	if ms := si.SemiSyncTimeoutMS; ms > 0 && time.Duration(ms)*time.Millisecond < MinSemiSyncTimeout {
		warnings = append(warnings, fmt.Sprintf("rpl_semi_sync_master_timeout is %d ms: an fsync or a store upload slower than that makes the primary commit without waiting; run SET GLOBAL rpl_semi_sync_master_timeout=10000", ms))
	}
	return problems, warnings
}

// SourceProblems lists what keeps a server from being a binvault source,
// each as a one-line fix. Empty means ready.
func (si ServerInfo) SourceProblems() []string {
	var p []string
	if !si.LogBin {
		p = append(p, "binary log is off: start the server with log_bin (and binlog_format=ROW)")
	}
	if si.BinlogFormat != "ROW" {
		p = append(p, fmt.Sprintf("binlog_format is %s: set binlog_format=ROW on the primary (SET GLOBAL binlog_format=ROW and in its config file)", si.BinlogFormat))
	}
	if si.BinlogRowImage != "" && si.BinlogRowImage != "FULL" {
		p = append(p, fmt.Sprintf("binlog_row_image is %s: set binlog_row_image=FULL on the primary", si.BinlogRowImage))
	}
	return p
}
