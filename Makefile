# binvault — see README.md. Every target installs what it needs when missing
# (scripts/setup.sh: MariaDB from Debian, versitygw into ~/.cache/binvault).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Packages whose tests exercise concurrency run under the race detector too.
RACE_PKGS := ./storage/... ./internal/... ./replicator/... ./backup/... ./restore/...

export GOFLAGS := -buildvcs=false

.PHONY: all build test test-unit test-e2e lint demo bench chaos fuzz setup clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/binvault ./cmd/binvault

setup:
	@scripts/setup.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Everything: lint, unit tests, race tests, end-to-end tests against real
# MariaDB and versitygw servers. BINVAULT_REQUIRE_SERVERS=1 turns a missing
# server into a failure instead of a skip.
test: setup lint build
	BINVAULT_REQUIRE_SERVERS=1 $(GO) test -count=1 -timeout 20m ./...
	BINVAULT_REQUIRE_SERVERS=1 $(GO) test -count=1 -race -short -timeout 10m $(RACE_PKGS)
	$(MAKE) fuzz
	$(MAKE) chaos ROUNDS=3

# Each fuzz target of the parsers of stored and streamed bytes, for
# FUZZTIME (a few seconds in make test; longer by hand). A crasher found
# is written to the package's testdata/fuzz and fails the run: keep it
# there as a regression case.
FUZZTIME ?= 3s
FUZZ_TARGETS := FuzzUnframe:./storage FuzzReader:./internal/binlog FuzzDecodeHeader:./internal/archive \
	FuzzDDLTarget:./internal/replay FuzzDisableEventOnReplica:./internal/replay FuzzParseStatusVars:./internal/replay
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$${t%%:*}\$$" -fuzztime=$(FUZZTIME) $${t#*:} || exit 1; \
	done

# The tests that need no server, in seconds: every package but the
# end-to-end suite, with the real-server tests skipped (BINVAULT_UNIT=1).
test-unit:
	BINVAULT_UNIT=1 $(GO) test -short -count=1 $$($(GO) list ./... | grep -v '/test$$\|/test/')

demo: setup build
	$(GO) run ./test/demo

# Benchmarks against the native tools (test/bench): every scenario, or
# BENCH="backup ..." for some. sysbench is installed for them; the data sets
# are prepared once into the cache directory.
BENCH ?=
bench: build
	@BINVAULT_SETUP_BENCH=1 scripts/setup.sh
	$(GO) run ./test/bench -binvault bin/binvault $(BENCH)

# Chaos rounds (test/chaos): each round kills binvault, the DR replica or
# the primary (failover), or takes the store away, under a write load, then
# checks the archive, the replica and a restore to a random archived GTID.
# CHAOS_SEED repeats the choices, CHAOS_FAULTS=daemon,replica,store,failover
# picks faults.
ROUNDS ?= 3
chaos: setup build
	$(GO) run ./test/chaos -binvault bin/binvault -rounds $(ROUNDS)

clean:
	rm -rf bin .demo
