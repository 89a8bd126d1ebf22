package dbconn

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
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
		 'gtid_mode','gtid_binlog_pos','gtid_executed','gtid_strict_mode','read_only')`)
	if err != nil {
		return si, err
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return si, err
		}
		vars[k] = v
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
