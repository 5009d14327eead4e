# kiln — see README.md. `make run` and `make test` are the two commands that
# must work on a fresh machine with only Go installed.

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...
# Extra arguments for `make run`, e.g. RUN_ARGS='--jobs 80'.
RUN_ARGS ?=
# The demo charges a quarter of the published per-step times (shared/COSTS.md)
# so that it finishes in about a minute; `make serve` runs at scale 1.
DEMO_SETS ?= --set cost.time_scale=0.25 --set workers.simulate=true

.PHONY: all policies policy-as build run cluster-demo serve test test-torch load bench bench-sim bench-stages bench-routing bench-experiments chaos check fmt vet tidy-check fuzz proto proto-check clean install screenshots

all: build

# The built-in policies, built to WASM for bin/kiln to embed (gitignored; a
# built-in whose module is missing is served by its native build).
POLICY_DIRS := $(wildcard policies/*/*/wasm)
policies:
	@for d in $(POLICY_DIRS); do p=$${d%/wasm}; k=$$(echo $$p | cut -d/ -f2); n=$$(echo $$p | cut -d/ -f3); \
	  GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -ldflags='-s -w' \
	    -o internal/policy/builtin/$$k.$$n.wasm ./$$d || exit 1; done

# The AssemblyScript example policy (examples/policy-as): npm installs the
# compiler pinned in its package-lock.json once, asc builds the module that
# internal/policy's tests load. Where npm is missing or offline this says so
# and goes on: `make run` and `make test` need only Go (the tests skip).
policy-as:
	@if ! command -v npm >/dev/null 2>&1; then echo "npm not found: the AssemblyScript example policy is not built"; 	elif [ -d examples/policy-as/node_modules/assemblyscript ] || npm ci --prefix examples/policy-as --no-audit --no-fund >/dev/null 2>&1; then 	  npm run --prefix examples/policy-as --silent build || echo "asc failed: the AssemblyScript example policy is not built"; 	else echo "npm ci failed (offline?): the AssemblyScript example policy is not built"; fi

build: policies policy-as
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kiln ./cmd/kiln
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kiln-worker-sim ./cmd/kiln-worker-sim
	for p in storage-fs storage-http loader-safetensors loader-gguf; do \
		$(GO) build -o $(BIN)/kiln-$$p ./plugins/$$p || exit 1; done

run: build
	$(BIN)/kiln demo $(DEMO_SETS) $(RUN_ARGS)

# Three kiln nats servers and three kiln nodes as processes on loopback, the
# demo workload spread over them, per-node progress; Ctrl-C stops them all.
cluster-demo: build
	$(BIN)/kiln demo --nodes 3 $(DEMO_SETS) $(RUN_ARGS)

serve: build
	$(BIN)/kiln serve --data-dir demo/data --models demo/models

# Unit tests and the process-level tests in tests/ (they build bin/ first).
# The timeout is per package: tests/ (real processes, a browser, a NATS
# cluster) takes ~4 min idle and more than 9 on a loaded two-core machine.
test: build
	$(GO) test -count=1 -timeout 15m $(PKGS)
	@if /usr/bin/python3 -c 'import msgpack' 2>/dev/null; then \
		cd sdk/python && /usr/bin/python3 -m unittest -q; \
	else echo "skip: the Python worker SDK tests need /usr/bin/python3 with msgpack (apt-get install python3-msgpack)"; fi

# The PyTorch worker end to end through kiln on this machine's CPU (slow to
# install: Debian's python3-torch), plus the Python SDK's unit tests.
test-torch: build
	apt-get install -y python3-torch python3-msgpack
	$(GO) test -tags torch -count=1 -run Torch -v ./tests/
	cd sdk/python && /usr/bin/python3 -m unittest

# The dashboard's pages, as a real headless chromium shows them while kiln
# runs jobs and a canary: docs/screenshots/<page>.png (the README shows one).
screenshots: build
	DASHBOARD_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run TestDashboardInBrowser -v ./tests/

# The chaos test of `make test`, run for longer: random worker kills and a
# kill -9 of kiln under continuous submission; prints the counts.
CHAOS_SECONDS ?= 120
chaos: build
	CHAOS_SECONDS=$(CHAOS_SECONDS) $(GO) test -count=1 -timeout 30m -run Chaos -v ./tests/ | grep -E 'chaos:|^(---|ok|FAIL)'

# The seeds' load scenario on loopback, open loop: ramp 1 → 1,000
# submissions/s over a minute, 10 minutes at 500/s, a spike to 2,000/s; it
# prints errors, accept latency and kiln's memory over time.
load: build
	$(GO) run ./tests/loadgen -scenario -concurrency 512

bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./internal/worker/ ./internal/job/ ./internal/modelfile/
	$(GO) run ./tests/loadgen -duration 10s -concurrency 64

# The simulator's suite (internal/sim, docs/simulator.md): the three configs
# of configs/ and every eviction policy on the ServeGen and Azure traces
# (derived traces are generated in memory, not written), written into the
# marked section of BENCHMARKS.md. A few minutes on two cores.
TRACES ?= ../shared/traces
bench-sim:
	$(GO) run ./cmd/kiln sim bench --traces $(TRACES) --configs configs --update BENCHMARKS.md

# Big models on 24 and 48 GiB GPUs, in stages against whole-job admission
# (BENCHMARKS.md "Big models on 24 and 48 GiB GPUs"; about 2 s), and the
# routing policies on simulated clusters (BENCHMARKS.md "Routing across
# nodes"; 4, 16 and 64 nodes, about 1 min). Each writes its table to a
# markdown file, to be pasted into its section.
bench-stages:
	KILN_BENCH_STAGES=$(CURDIR)/bench-stages.md $(GO) test -count=1 -timeout 0 -run '^TestBenchStages$$' -v ./internal/sim/
bench-routing:
	KILN_BENCH_ROUTING=$(CURDIR)/bench-routing.md KILN_BENCH_ROUTING_NODES=4,16,64 KILN_TRACES=$(abspath $(TRACES)) $(GO) test -count=1 -timeout 0 -run '^TestBenchRouting$$' -v ./internal/sim/

# The experiments' error rates (internal/experiment/RATIONALE.md): A/A false
# alarms and planted bad policies' rollback rates (power), per experiment
# type and load, with Wilson intervals; the table goes to
# bench-experiments.md, to be pasted into BENCHMARKS.md. About 900
# two-hour simulations, GOMAXPROCS at a time (32 min on two shared cores,
# depending on what else runs); KILN_BENCH_RUNS=N for fewer A/A runs.
bench-experiments:
	KILN_BENCH_EXPERIMENTS=$(CURDIR)/bench-experiments.md nice $(GO) test -count=1 -timeout 0 -run '^TestBenchExperiments$$' -v ./internal/sim/

# Installs kiln as a daemon (docs/deploy.md): the binaries of make build in
# $(PREFIX)/lib/kiln (kiln finds its worker and plugins beside it), kiln on
# PATH, shell completion, the systemd unit, and /etc/kiln/kiln.yaml unless
# there is one. Then: systemctl daemon-reload && systemctl enable --now kiln.
PREFIX  ?= /usr/local
DESTDIR ?=
install: build
	install -d $(DESTDIR)$(PREFIX)/lib/kiln $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/kiln \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 0755 $(BIN)/kiln* $(DESTDIR)$(PREFIX)/lib/kiln/
	ln -sf $(PREFIX)/lib/kiln/kiln $(DESTDIR)$(PREFIX)/bin/kiln
	$(BIN)/kiln completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/kiln
	$(BIN)/kiln completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_kiln
	$(BIN)/kiln completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/kiln.fish
	sed 's#/usr/local/lib/kiln/#$(PREFIX)/lib/kiln/#g' deploy/systemd/kiln.service > $(DESTDIR)/etc/systemd/system/kiln.service
	@if [ -e $(DESTDIR)/etc/kiln/kiln.yaml ]; then echo "kept $(DESTDIR)/etc/kiln/kiln.yaml"; \
	else install -m 0644 deploy/kiln.yaml $(DESTDIR)/etc/kiln/kiln.yaml; fi

fmt:
	gofmt -w .

vet:
	$(GO) vet $(PKGS)

tidy-check:
	@cp go.mod /tmp/kiln-go.mod.bak && cp go.sum /tmp/kiln-go.sum.bak
	@$(GO) mod tidy
	@if ! diff -q go.mod /tmp/kiln-go.mod.bak >/dev/null || ! diff -q go.sum /tmp/kiln-go.sum.bak >/dev/null; then \
		echo "go.mod/go.sum are not tidy; run go mod tidy and commit"; \
		cp /tmp/kiln-go.mod.bak go.mod; cp /tmp/kiln-go.sum.bak go.sum; exit 1; fi

check: build
	@out=$$(gofmt -l . | grep -v '^bin/'); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(MAKE) tidy-check
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# Each fuzz target for FUZZTIME (default 60s).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime $(FUZZTIME) ./sdk/worker/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSubmit$$' -fuzztime $(FUZZTIME) ./internal/api/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/workflow/
	$(GO) test -run '^$$' -fuzz '^FuzzReadHeader$$' -fuzztime $(FUZZTIME) ./internal/modelfile/
	$(GO) test -run '^$$' -fuzz '^FuzzLoadYAML$$' -fuzztime $(FUZZTIME) ./internal/config/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./plugins/loader-safetensors/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./plugins/loader-gguf/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePrompt$$' -fuzztime $(FUZZTIME) ./internal/api/comfy/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./sdk/policy/
	$(GO) test -run '^$$' -fuzz '^FuzzInstrument$$' -fuzztime $(FUZZTIME) ./internal/policy/
	$(GO) test -run '^$$' -fuzz '^FuzzParseGuard$$' -fuzztime $(FUZZTIME) ./internal/experiment/
	$(GO) test -run '^$$' -fuzz '^FuzzSpec$$' -fuzztime $(FUZZTIME) ./internal/experiment/

# The plugin protocol's generated Go code is committed; regenerating needs
# protoc (Debian's protobuf-compiler) and protoc-gen-go/-go-grpc.
proto:
	sdk/plugin/gen.sh

proto-check: proto
	git diff --exit-code sdk/plugin/kilnpluginv1

clean:
	rm -rf $(BIN) demo internal/policy/builtin/*.wasm
