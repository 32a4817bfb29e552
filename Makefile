# pgq — common tasks. `make help` lists them.

GO      ?= go
# sqlc runs from its own module; -modfile does not mix with go.work.
SQLC    := GOWORK=off $(GO) tool -modfile=tools/go.mod sqlc
WITHPG  := $(GO) run ./internal/cmd/withpg --
# gotest's: also installs PgBouncer when missing (as root, with apt-get).
WITHPGB := $(GO) run ./internal/cmd/withpg -pgbouncer --
# The modules go.work puts together: the library (.), the command line
# (cmd/pgq) and the integrations (pgqprom, pgqotel, pgqweb). `go ... ./...` at the root covers the
# library only, so the CLI's packages are named beside it.
CLIPKGS := ./cmd/pgq/...
# Extra flags for go test, e.g. make test TESTFLAGS='-run TestWatcher -v'
TESTFLAGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: ## Run the demo (a throwaway PostgreSQL unless PGQ_DSN is set)
	$(GO) run ./cmd/pgq demo

.PHONY: test
test: verify gotest maxpayload chaos fuzz ## Check generated code and formatting, run every test on a throwaway PostgreSQL, a 60-s chaos run, fuzz briefly

.PHONY: gotest
gotest: pgqueuer-env ## Run go test -race ./... on a throwaway PostgreSQL (or PGQ_TEST_DSN), PgBouncer installed
	PGQUEUER_ENV=$$(cat $(PGQUEUER_DIR)/.envpath 2>/dev/null) $(WITHPGB) sh -c '$(GO) test -race -count=1 -timeout 25m $(TESTFLAGS) ./... $(CLIPKGS) && cd pgqprom && $(GO) test -race -count=1 -timeout 5m ./... && cd ../pgqotel && $(GO) test -race -count=1 -timeout 5m ./... && cd ../pgqweb && $(GO) test -race -count=1 -timeout 10m ./...'
	cd bench/compare && GOWORK=off $(GO) test -count=1 ./...

# The 256 MiB payload round trip, on its own after the other tests: it takes
# minutes and about 2 GiB of memory (docs/limits.md), so go test skips it
# unless PGQ_TEST_MAXPAYLOAD=1. Without -race, which would triple its memory
# and add nothing: the code it runs is the same as for small payloads.
.PHONY: maxpayload
maxpayload: ## Enqueue and run a job with a 256 MiB payload on each driver (a throwaway PostgreSQL)
	PGQ_TEST_MAXPAYLOAD=1 $(WITHPG) $(GO) test -count=1 -timeout 30m -run '^TestMaxPayloadRoundTrip$$' -v .
	PGQ_TEST_MAXPAYLOAD=1 $(GO) test -count=1 -timeout 10m -run '^TestQueuePayloadOverLimit$$' ./cmd/pgq/internal/cli

# pgq chaos on its own throwaway server, every fault kind (restarts and
# crashes included); it fails when a job is lost or stuck or ran twice
# outside a crash window. Longer: make chaos CHAOSTIME=30m.
CHAOSTIME ?= 60s

.PHONY: chaos
chaos: ## Run `pgq chaos` for CHAOSTIME (default 60s) on a throwaway PostgreSQL
	$(GO) build -o bin/pgq ./cmd/pgq
	bin/pgq chaos --duration $(CHAOSTIME) --worker-log bin/chaos-workers.log

# Each fuzz target runs for FUZZTIME (its seed corpus in testdata/fuzz also
# runs with every go test). Longer: make fuzz FUZZTIME=1000000x. The default
# is a count of inputs, not a duration: with a duration, Go before 1.27
# can fail a target at the deadline with "context deadline exceeded" and
# no failing input (golang/go#75804, a race in its fuzzing coordinator).
FUZZTIME ?= 10000x
FUZZ_TARGETS := .:FuzzParseCron .:FuzzParseEvent .:FuzzDecodeHeaders \
	./internal/sqlname:FuzzQuoteIdent ./internal/sqlname:FuzzNames \
	./internal/dsn:FuzzParseKeywordValue ./internal/dsn:FuzzRedact

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 10000x)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "fuzz $$pkg $$name"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/pgq-fuzz.log 2>&1 \
			|| { cat /tmp/pgq-fuzz.log; exit 1; }; \
	done

# PGQueuer itself (Python) for the tests that run it: set up from
# ../shared/pgqueuer when that exists and python3 is there; otherwise those
# tests skip, saying so in one line.
PGQUEUER_SHARED := ../shared/pgqueuer
PGQUEUER_DIR    ?= /tmp/pgqueuer-env

.PHONY: pgqueuer-env
pgqueuer-env: ## Set up PGQueuer (Python) for the interop tests, when ../shared/pgqueuer exists
	@rm -f $(PGQUEUER_DIR)/.envpath
	@if [ -x $(PGQUEUER_SHARED)/setup.sh ] && command -v python3 >/dev/null 2>&1; then \
		$(PGQUEUER_SHARED)/setup.sh $(PGQUEUER_DIR) >$(PGQUEUER_DIR).log 2>&1 \
			&& echo $(PGQUEUER_DIR)/env.sh > $(PGQUEUER_DIR)/.envpath \
			|| echo "PGQueuer setup failed (see $(PGQUEUER_DIR).log): the tests that run PGQueuer itself will skip"; \
	else \
		echo "no $(PGQUEUER_SHARED) or no python3: the tests that run PGQueuer itself will skip"; \
	fi

.PHONY: generate
generate: ## Regenerate dbgen/ from db/queries and db/migrations with sqlc
	$(SQLC) generate

.PHONY: verify
verify: ## Fail when dbgen/ is stale (sqlc diff), code is not gofmt'd or go vet complains
	$(SQLC) diff
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./... $(CLIPKGS)
	cd pgqprom && $(GO) vet ./...
	cd pgqotel && $(GO) vet ./...
	cd pgqweb && $(GO) vet ./...
	cd bench/compare && GOWORK=off $(GO) vet ./...

.PHONY: tidy
tidy: ## go mod tidy in each module (cmd/pgq's against the pgq beside it)
	GOWORK=off $(GO) mod tidy
	cd cmd/pgq && $(GO) mod edit -replace github.com/pgq-dev/pgq=../.. -replace github.com/pgq-dev/pgq/pgqweb=../../pgqweb \
		&& { GOWORK=off $(GO) mod tidy; rc=$$?; $(GO) mod edit -dropreplace github.com/pgq-dev/pgq \
			-dropreplace github.com/pgq-dev/pgq/pgqweb; exit $$rc; }
	cd pgqprom && GOWORK=off $(GO) mod tidy
	cd pgqotel && GOWORK=off $(GO) mod tidy
	cd pgqweb && GOWORK=off $(GO) mod tidy
	cd bench/compare && GOWORK=off $(GO) mod tidy

.PHONY: bench
bench: ## Run the drain benchmark (100,000 jobs, throwaway PostgreSQL with stock settings)
	$(GO) run ./cmd/pgq bench drain --jobs 100000

# Instructions a job that a PostgreSQL backend runs for pgq's claim and
# finish, under valgrind's callgrind, for the schema as installed and for
# variants that each drop a part of it (docs/benchmarks.md, "Instructions
# a job"): repeatable whatever else the machine is doing. About 40 s a
# variant; INSTRFLAGS passes more flags (-variants, -batch, -loops).
INSTRFLAGS ?=

.PHONY: instructions
instructions: ## Count a backend's instructions a job for pgq's claim + finish, per schema variant (valgrind)
	$(GO) run ./internal/cmd/instructions $(INSTRFLAGS)

# River, PGQueuer and pgq side by side on one throwaway PostgreSQL, in
# ROUNDS alternating rounds (docs/benchmarks.md). bench/compare is a module
# of its own, outside go.work, so that River stays out of pgq's go.mod.
# 2-6 minutes a round on 2 cores, by how busy they are; COMPAREFLAGS
# passes more flags (go run ./bench/compare -h lists them), e.g.
# COMPAREFLAGS='-jobs 20000'.
ROUNDS       ?= 9
COMPAREFLAGS ?=

.PHONY: compare
compare: build pgqueuer-env ## River, PGQueuer and pgq side by side, ROUNDS alternating rounds (default 9)
	cd bench/compare && PGQUEUER_ENV=$$(cat $(PGQUEUER_DIR)/.envpath 2>/dev/null) GOWORK=off \
		$(GO) run . -pgq ../../bin/pgq -rounds $(ROUNDS) $(COMPAREFLAGS)

.PHONY: build
build: ## Build the pgq command into bin/
	$(GO) build -o bin/pgq ./cmd/pgq
