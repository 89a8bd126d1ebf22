package metrics

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The README's metric table and the registered metrics must name the same set.
func TestREADMEListsEveryMetric(t *testing.T) {
	m := New()
	zero := func() float64 { return 0 }
	m.RegisterSpool(SpoolGauges{Bytes: zero, Segments: zero, RPO: zero, CommitAge: zero})
	m.RegisterReplica(ReplicaGauges{SecondsBehind: zero, TxnsBehind: zero})
	m.RegisterAvailability(func() []PartAvailability { return []PartAvailability{{Part: "stream"}} })
	m.RegisterServe(func() ServeSnapshot { return ServeSnapshot{Replicas: []ServedReplica{{ServerID: 7}}} })
	m.ReplicaBatchTxns.Observe(1)
	m.ReplicaBatchSeconds.Observe(1)
	m.ArchiveUploadDuration.Observe(1)
	m.SemiSyncMode.WithLabelValues("spool").Set(1)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var registered []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "binvault_") {
			registered = append(registered, f.GetName())
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(binvault_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = true
	}
	sort.Strings(registered)
	for _, name := range registered {
		if !documented[name] {
			t.Errorf("metric %s is not in the README's table", name)
		}
		delete(documented, name)
	}
	for name := range documented {
		t.Errorf("README documents %s, which is not registered", name)
	}
}
