# pgq — common tasks. `make help` lists them.

GO      ?= go
SQLC    := $(GO) tool -modfile=tools/go.mod sqlc
WITHPG  := $(GO) run ./internal/cmd/withpg --
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
test: verify gotest ## Check generated code and formatting, then run every test on a throwaway PostgreSQL

.PHONY: gotest
gotest: ## Run go test -race ./... on a throwaway PostgreSQL (or PGQ_TEST_DSN)
	$(WITHPG) sh -c '$(GO) test -race -count=1 -timeout 15m $(TESTFLAGS) ./... && cd pgqprom && $(GO) test -race -count=1 -timeout 5m ./...'

.PHONY: generate
generate: ## Regenerate dbgen/ from db/queries and db/migrations with sqlc
	$(SQLC) generate

.PHONY: verify
verify: ## Fail when dbgen/ is stale (sqlc diff), code is not gofmt'd or go vet complains
	$(SQLC) diff
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	cd pgqprom && $(GO) vet ./...

.PHONY: bench
bench: ## Run the drain benchmark (100,000 jobs, throwaway PostgreSQL with stock settings)
	$(GO) run ./cmd/pgq bench drain --jobs 100000

.PHONY: build
build: ## Build the pgq command into bin/
	$(GO) build -o bin/pgq ./cmd/pgq
