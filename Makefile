# keygate — see README.md. Every target works on a fresh machine with Go 1.26.
GO      ?= go
BIN     ?= bin
FUZZTIME ?= 10s
PKGS    := ./...

.PHONY: all build test race vet fmt lint fuzz fuzz-short fuzz-long bench run demo soak clean

all: build

# The binaries report this with --version (internal/buildinfo).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

build:
	$(GO) build -ldflags "-X github.com/keygate/keygate/internal/buildinfo.version=$(VERSION)" -o $(BIN)/ ./cmd/...

# The one command that runs every test (CI runs exactly this): vet, gofmt,
# staticcheck, every test under the race detector, then every fuzz target for 10 s.
test: lint
	$(GO) test -race -count=1 $(PKGS)
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s

race: test

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Every fuzz target for FUZZTIME each (CI: short; `make fuzz FUZZTIME=5m` for long runs).
# A crasher is written to the package's testdata/fuzz/ (commit it) and fails the run.
# Go 1.26's fuzz coordinator can fail a run at the FUZZTIME boundary with a bare
# "context deadline exceeded" (golang/go#75804, fixed in Go 1.27) on a busy
# machine: such a run, with no failing input written and no panic, is run once
# more and then tolerated; anything else fails.
fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for dir in $$(grep -rl --exclude-dir=node_modules --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$dir/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "== $$dir $$f"; \
	    for try in 1 2; do \
	      if $(GO) test -run XXX -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$dir >$$log 2>&1; then cat $$log; break; fi; \
	      cat $$log; \
	      if grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written\|panic:' $$log; then \
	        echo "   (fuzz coordinator deadline race, golang/go#75804: no failing input; try $$try of 2)"; continue; fi; \
	      exit 1; \
	    done; \
	  done; done

# The short pass `make test` ends with: every fuzz target for 10 s (about 2 minutes).
fuzz-short:
	$(MAKE) fuzz FUZZTIME=10s

# The long pass, by hand: every fuzz target for 5 minutes.
fuzz-long:
	$(MAKE) fuzz FUZZTIME=5m

# In-process benchmarks (docs/BENCHMARKS.md); under 5 minutes.
bench:
	$(GO) test -run XXX -bench . -benchtime 2s ./store ./sidecar ./internal/...

# Load benchmarks (docs/BENCHMARKS.md): manual, minutes each, need wrk
# (installed from Debian if missing); never run by CI.
.PHONY: bench-http bench-scale bench-gateway bench-revoke
bench-http:
	bench/http.sh
bench-scale:
	bench/scale.sh
bench-gateway:
	bench/gateway.sh
bench-revoke:
	bench/revoke.sh

# The sidecar alone on its embedded bbolt (secrets for development only).
run: build
	KEYGATE_GATEWAY_SECRET=$${KEYGATE_GATEWAY_SECRET:-dev-gateway-secret-change-me} \
	KEYGATE_ADMIN_TOKEN=$${KEYGATE_ADMIN_TOKEN:-dev-admin-token-change-me} \
	$(BIN)/keygate-sidecar --listen 127.0.0.1:8080 --db ./data/keygate.db

# The 10-minute soak of docs/RELIABILITY.md (not in CI).
soak:
	KEYGATE_SOAK=$${KEYGATE_SOAK:-10m} $(GO) test -count=1 -timeout 30m -run TestSoak -v ./e2e

demo:
	$(GO) run ./examples/demo

clean:
	rm -rf $(BIN)
