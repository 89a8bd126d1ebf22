package dbconn

import (
	"errors"
	"strings"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-sql-driver/mysql"
)

// Server error numbers binvault acts on, by the server's own names
// (include/mysqld_error.h, MariaDB's sql/share/errmsg-utf8.txt).
const (
	erDBCreateExists           = 1007 // ER_DB_CREATE_EXISTS
	erAccessDenied             = 1045 // ER_ACCESS_DENIED_ERROR
	erBadDB                    = 1049 // ER_BAD_DB_ERROR
	erTableExists              = 1050 // ER_TABLE_EXISTS_ERROR
	erBadField                 = 1054 // ER_BAD_FIELD_ERROR
	erNoSuchThread             = 1094 // ER_NO_SUCH_THREAD
	erHostNotPrivileged        = 1130 // ER_HOST_NOT_PRIVILEGED
	erNoSuchTable              = 1146 // ER_NO_SUCH_TABLE
	erLockWaitTimeout          = 1205 // ER_LOCK_WAIT_TIMEOUT
	erLockDeadlock             = 1213 // ER_LOCK_DEADLOCK
	erSpecificAccessDenied     = 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR
	erMasterFatalReadingBinlog = 1236 // ER_MASTER_FATAL_ERROR_READING_BINLOG
	erSPAlreadyExists          = 1304 // ER_SP_ALREADY_EXISTS
	erViewInvalid              = 1356 // ER_VIEW_INVALID
	erTrgAlreadyExists         = 1359 // ER_TRG_ALREADY_EXISTS
	erTableDefChanged          = 1412 // ER_TABLE_DEF_CHANGED
	erEventAlreadyExists       = 1537 // ER_EVENT_ALREADY_EXISTS
	erAccessDeniedNoPassword   = 1698 // ER_ACCESS_DENIED_NO_PASSWORD_ERROR
	erSlaveSameID              = 4052 // ER_SLAVE_SAME_ID (MariaDB)
)

// ServerError returns the error number and message a server sent, from
// either driver binvault uses (go-sql-driver's *mysql.MySQLError for SQL
// connections, go-mysql's *mysql.MyError for the binlog stream and the
// replay connection); ok is false when err carries none.
func ServerError(err error) (code uint16, message string, ok bool) {
	var se *mysql.MySQLError
	if errors.As(err, &se) {
		return se.Number, se.Message, true
	}
	var me *gomysql.MyError
	if errors.As(err, &me) {
		return me.Code, me.Message, true
	}
	return 0, "", false
}

func isCode(err error, codes ...uint16) bool {
	code, _, ok := ServerError(err)
	if !ok {
		return false
	}
	for _, c := range codes {
		if code == c {
			return true
		}
	}
	return false
}

// IsAccessDenied: wrong user or password.
func IsAccessDenied(err error) bool { return isCode(err, erAccessDenied, erAccessDeniedNoPassword) }

// IsHostNotAllowed: the user may not connect from binvault's address.
func IsHostNotAllowed(err error) bool { return isCode(err, erHostNotPrivileged) }

// IsMissingPrivilege: the statement needs a privilege the user lacks.
func IsMissingPrivilege(err error) bool { return isCode(err, erSpecificAccessDenied) }

// IsLockConflict: a lock wait timed out or the transaction was chosen as a
// deadlock victim; running the transaction again may succeed.
func IsLockConflict(err error) bool { return isCode(err, erLockWaitTimeout, erLockDeadlock) }

// IsUnknownDatabase: the database does not exist.
func IsUnknownDatabase(err error) bool { return isCode(err, erBadDB) }

// IsNoSuchTable: the table (or view) does not exist.
func IsNoSuchTable(err error) bool { return isCode(err, erNoSuchTable) }

// IsMissingTableOrView: a table does not exist, or a view refers to one
// that does not (yet).
func IsMissingTableOrView(err error) bool { return isCode(err, erNoSuchTable, erViewInvalid) }

// IsUnknownThread: KILL named a connection that is gone already.
func IsUnknownThread(err error) bool { return isCode(err, erNoSuchThread) }

// IsTableChanged: a table read went wrong because DDL changed or dropped
// the table meanwhile.
func IsTableChanged(err error) bool { return isCode(err, erTableDefChanged, erNoSuchTable, erBadField) }

// IsAlreadyExists: a CREATE of a database, table, view, routine, trigger or
// event found it there.
func IsAlreadyExists(err error) bool {
	return isCode(err, erDBCreateExists, erTableExists, erSPAlreadyExists, erTrgAlreadyExists, erEventAlreadyExists)
}

// IsBinlogFatal: the primary stopped a binlog dump for good (error 1236);
// the message says why. Replicas do not retry it.
func IsBinlogFatal(err error) bool { return isCode(err, erMasterFatalReadingBinlog) }

// IsBinlogPurged: the primary no longer holds the binlog the dump asked
// for (purged, or a GTID it never had). The server says so only in the
// message of error 1236; these are MariaDB's and MySQL's wordings.
func IsBinlogPurged(err error) bool {
	code, msg, ok := ServerError(err)
	if !ok || code != erMasterFatalReadingBinlog {
		return false
	}
	for _, s := range []string{"purged", "not in the master's binlog", "Could not find GTID state", "could not find next log"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// IsServerIDTaken: another replica registered with the same server_id.
// MariaDB reports it as ER_SLAVE_SAME_ID (4052), MySQL as 1236 "same
// server id". The primary sends it to the connection it drops because a
// newer one registered the same id.
func IsServerIDTaken(err error) bool {
	code, msg, ok := ServerError(err)
	return ok && (code == erSlaveSameID || code == erMasterFatalReadingBinlog && strings.Contains(msg, "same server"))
}
