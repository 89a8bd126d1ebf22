package dbconn

import (
	"strings"
	"testing"
)

func TestSemiSyncProblemsNameTheFix(t *testing.T) {
	cases := []struct {
		name               string
		si                 ServerInfo
		problems, warnings []string
	}{
		{"ready", ServerInfo{SemiSyncEnabled: "ON", SemiSyncWaitPoint: "AFTER_SYNC", SemiSyncTimeoutMS: 10000}, nil, nil},
		{"off", ServerInfo{SemiSyncEnabled: "OFF", SemiSyncWaitPoint: "AFTER_SYNC", SemiSyncTimeoutMS: 10000},
			[]string{"SET GLOBAL rpl_semi_sync_master_enabled=ON"}, nil},
		{"none", ServerInfo{}, []string{"no semi-synchronous replication", "source.semi_sync: off"}, nil},
		{"after commit, short timeout", ServerInfo{SemiSyncEnabled: "ON", SemiSyncWaitPoint: "AFTER_COMMIT", SemiSyncTimeoutMS: 200}, nil,
			[]string{"SET GLOBAL rpl_semi_sync_master_wait_point=AFTER_SYNC", "200 ms", "SET GLOBAL rpl_semi_sync_master_timeout=10000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, w := c.si.SemiSyncProblems("spool")
			check := func(kind string, got []string, want []string) {
				all := strings.Join(got, "\n")
				if len(want) == 0 && len(got) > 0 {
					t.Errorf("%s: %q, want none", kind, all)
				}
				for _, s := range want {
					if !strings.Contains(all, s) {
						t.Errorf("%s %q lack %q", kind, all, s)
					}
				}
			}
			check("problems", p, c.problems)
			check("warnings", w, c.warnings)
		})
	}
}
