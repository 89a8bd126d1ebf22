package dbconn

import (
	"errors"
	"fmt"
	"testing"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-sql-driver/mysql"
	pingcap "github.com/pingcap/errors"
)

func TestServerErrorPredicates(t *testing.T) {
	sqlErr := func(n uint16, msg string) error {
		return fmt.Errorf("query: %w", &mysql.MySQLError{Number: n, Message: msg})
	}
	// go-mysql wraps its errors with pingcap/errors' stack traces.
	streamErr := func(n uint16, msg string) error {
		return pingcap.Trace(&gomysql.MyError{Code: n, Message: msg})
	}
	cases := []struct {
		name string
		pred func(error) bool
		yes  []error
		no   []error
	}{
		{"IsAccessDenied", IsAccessDenied,
			[]error{sqlErr(1045, "Access denied"), streamErr(1698, "Access denied"), sqlErr(1045, "")},
			[]error{sqlErr(1044, "Access denied for user to database"), errors.New("ERROR 1045 (28000): Access denied")}},
		{"IsLockConflict", IsLockConflict,
			[]error{sqlErr(1205, "Lock wait timeout"), sqlErr(1213, "Deadlock"), streamErr(1213, "Deadlock")},
			[]error{sqlErr(1206, "lock table full")}},
		{"IsUnknownDatabase", IsUnknownDatabase, []error{sqlErr(1049, "Unknown database")}, []error{sqlErr(1146, "no table"), errors.New("1049")}},
		{"IsMissingTableOrView", IsMissingTableOrView, []error{sqlErr(1146, ""), sqlErr(1356, "")}, []error{sqlErr(1049, "")}},
		{"IsUnknownThread", IsUnknownThread, []error{streamErr(1094, "Unknown thread id: 7")}, []error{streamErr(1095, "not owner")}},
		{"IsBinlogPurged", IsBinlogPurged,
			[]error{
				streamErr(1236, "Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged."),
				streamErr(1236, "Error: connecting slave requested to start from GTID 0-1-99, which is not in the master's binlog"),
				streamErr(1236, "Cannot replicate because the master purged required binary logs."),
			},
			[]error{streamErr(1236, "A slave with the same server_uuid/server_id as this slave has connected to the master"), sqlErr(1045, "purged")}},
		{"IsServerIDTaken", IsServerIDTaken,
			[]error{streamErr(4052, "A slave with the same server_uuid/server_id as this slave has connected to the master"),
				streamErr(1236, "A slave with the same server_uuid/server_id as this slave has connected to the master; the first event 'x' at 4")},
			[]error{streamErr(1236, "Could not find GTID state")}},
		{"IsAlreadyExists", IsAlreadyExists, []error{sqlErr(1007, ""), sqlErr(1050, ""), sqlErr(1304, ""), sqlErr(1359, ""), sqlErr(1537, "")}, []error{sqlErr(1051, "")}},
		{"IsTableChanged", IsTableChanged, []error{sqlErr(1412, ""), sqlErr(1146, ""), sqlErr(1054, "")}, []error{sqlErr(1205, "")}},
	}
	for _, c := range cases {
		for _, e := range c.yes {
			if !c.pred(e) {
				t.Errorf("%s(%v) = false", c.name, e)
			}
		}
		for _, e := range c.no {
			if c.pred(e) {
				t.Errorf("%s(%v) = true", c.name, e)
			}
		}
		if c.pred(nil) {
			t.Errorf("%s(nil) = true", c.name)
		}
	}
}
