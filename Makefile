# Perseus developer commands. Everything runs inside .venv, created on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml clients/pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_WORKERS ?= 2

.PHONY: run test venv gen gen-config gen-check lint breaking check docs clean bench-ingest bench-indicators bench-core bench-ws

# The server and the SDK are two distributions (clients/pyproject.toml); the tests use both, editable.
$(STAMP): pyproject.toml clients/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e ./clients
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

run: venv ## start core + REST + WS (embedded Redis/PostgreSQL unless PERSEUS_*_URL are set)
	$(BIN)/perseus up

.PHONY: run-cluster
run-cluster: venv ## perseus up --cluster: a local Redis Cluster, PostgreSQL + streaming replica, 2 cores, 2 REST and 2 WS gateways
	$(BIN)/perseus up --cluster

.PHONY: redis-cluster
redis-cluster: venv ## a local 3-master / 3-replica Redis Cluster on free ports, in the foreground (prints the URLs; Ctrl-C stops it)
	$(BIN)/python -m perseus_cli.devstack.redis_cluster

gen: venv ## regenerate grpcio stubs and the betterproto2 SDK from proto/
	$(BIN)/python scripts/gen_proto.py

gen-config: venv ## regenerate docs/configuration.md from the PERSEUS_* declarations in common/settings.py
	$(BIN)/python scripts/gen_config_docs.py

gen-check: venv
	$(BIN)/python scripts/gen_proto.py --check
	$(BIN)/python scripts/gen_config_docs.py --check

lint: venv
	$(BIN)/buf lint
	$(BIN)/ruff check common core gateways clients/perseus_sdk tests scripts bench

breaking: venv ## buf breaking against main (skipped when main has no proto/ yet)
	@if git rev-parse -q --verify main:proto >/dev/null; then \
		$(BIN)/buf breaking --against '.git#branch=main'; \
	else echo "buf breaking: main has no proto/ yet, nothing to compare"; fi

# --strict turns every warning into a failure: a broken link or anchor, a missing snippet, a page left out of
# the nav. (Never add --quiet: it drops the warnings before --strict can count them.)
docs: venv ## build the documentation site into site/ (mkdocs-material; open site/index.html, it works offline)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

.PHONY: typecheck
typecheck: venv ## mypy --strict over the packages [tool.mypy] lists in pyproject.toml
	$(BIN)/mypy

# The deployment files, offline (no Docker engine or cluster needed): hadolint on the Dockerfile, the Compose
# specification's JSON schema (vendored by check-jsonschema) on deploy/compose.yaml, the Kubernetes schemas
# bundled in kubernetes-validate on every manifest, and `kubectl kustomize` rendering the base where kubectl
# is installed (tests/unit/test_deploy_files.py checks the kustomization's resource list either way).
.PHONY: lint-deploy
lint-deploy: venv ## lint the Dockerfile, validate deploy/compose.yaml and deploy/kubernetes offline
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	$(BIN)/kubernetes-validate --strict --quiet $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml))
	$(BIN)/ruff check deploy
	@for script in deploy/compose/*.sh; do sh -n "$$script" || exit 1; done
	@if command -v kubectl >/dev/null 2>&1; then \
		kubectl kustomize deploy/kubernetes > /dev/null && echo "kubectl kustomize deploy/kubernetes: renders"; \
	else echo "kubectl not installed: kustomize render skipped"; fi

check: gen-check lint breaking typecheck docs lint-deploy

test: check ## the whole suite: unit and integration tests in parallel
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

# The Redis-touching integration modules again, on a local Redis Cluster that each pytest worker starts
# (PERSEUS_TEST_REDIS=cluster, tests/support/redis_target.py); tests marked standalone_redis are skipped.
REDIS_CLUSTER_TESTS := $(addprefix tests/integration/,test_redis_target.py test_streams.py test_ws_stream.py \
	test_ws_faults.py test_sdk_stream.py test_stream_faults.py test_rest_limits.py test_rest_candle_freshness.py \
	test_writer_standby.py test_writer_leadership.py test_candle_takeover.py test_indicators_pipeline.py \
	test_hot_candles.py test_candle_queries.py test_price_queries.py test_ingest.py test_exchange_pipeline.py \
	test_ws_seed004.py test_event_publisher.py test_console_ops.py)
.PHONY: test-redis-cluster
test-redis-cluster: venv ## streams, resume, limiter, WS slots, writer lease, indicator states on a Redis Cluster (CI)
	PERSEUS_TEST_REDIS=cluster $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(REDIS_CLUSTER_TESTS)

bench-ingest: venv ## ingestion feeds/s and per-batch latency through gRPC and REST
	$(BIN)/python -m bench.ingest

bench-core: venv ## GetCandles req/s for 1 vs 2 core workers, each beside bare grpc.aio and redis-benchmark; Subscribe fan-out
	$(BIN)/python -m bench.core

.PHONY: bench-workers
bench-workers: venv ## REST (wrk, hot candles) and WS (fan-out) gateways as 1 process against 2 workers on one port
	$(BIN)/python -m bench.workers

bench-indicators: venv ## MACD-V and alerts for one close wave of 1,000 symbols x 6 timeframes, through Redis
	$(BIN)/python -m bench.indicators

.PHONY: bench-export
bench-export: venv ## bulk export: rows/s and peak RSS of gateway and core from 10k to 1M ticks, beside COPY TO STDOUT (SIZES=10000,...)
	$(BIN)/python -m bench.export $(if $(SIZES),--sizes $(SIZES))

.PHONY: bench-webhooks
bench-webhooks: venv ## alert webhooks: deliveries/s to a local receiver and the lag from alert to delivery
	$(BIN)/python -m bench.webhooks

.PHONY: bench-rest bench-redis-clients
# REDIS=standalone (the machine's Redis), cluster (a local 3+3 cluster started for the run) or standalone,cluster
REDIS ?= standalone
bench-rest: venv ## hot candle read through the REST gateway beside the two peers (wrk, 16/64/256 conns; REDIS=cluster; TRACING=1 adds a traced row)
	$(BIN)/python -m bench.rest --redis $(REDIS) $(if $(TRACING),--tracing)

bench-redis-clients: venv ## the REST limiter's round trip through resp and the candidate clients, standalone and cluster
	$(BIN)/python -m bench.redis_clients

.PHONY: bench-rest-baseline
BASELINE ?= HEAD~1
bench-rest-baseline: venv ## the REST hot path of BASELINE (a commit) against this tree's, alternating in one run
	$(BIN)/python -m bench.rest_baseline $(BASELINE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site

bench-ws: venv ## WebSocket fan-out beside the two reference bridges (1k and 10k clients, 20 channels; REDIS=cluster; TRACING=1 adds a traced row; MODE=e2e: ingest-to-client latency, 1k clients)
	$(if $(filter e2e,$(MODE)),$(BIN)/python -m bench.ws --mode e2e $(E2E_ARGS),$(BIN)/python -m bench.ws --redis $(REDIS) $(if $(TRACING),--tracing))

.PHONY: chaos chaos-short
CHAOS ?= full
chaos: venv ## fault drills against a private stack under load, one row per fault, invariants checked (~10 min; CHAOS=short)
	$(BIN)/python -m tests.chaos $(if $(filter short,$(CHAOS)),--short)

chaos-short: venv ## the CI version of `make chaos` (<= 4 min)
	$(BIN)/python -m tests.chaos --short

.PHONY: vendor-docs vendor-docs-check vendor-console vendor-console-check
vendor-docs: venv ## rebuild the REST gateway's vendored /docs assets (Swagger UI) from the npm registry, pinned and verified
	$(BIN)/python scripts/vendor_assets.py docs

vendor-docs-check: venv ## the committed /docs assets are exactly the pinned npm package's (needs the registry)
	$(BIN)/python scripts/vendor_assets.py docs --check

vendor-console: venv ## rebuild the vendored /console chart library (lightweight-charts) from the npm registry, pinned and verified
	$(BIN)/python scripts/vendor_assets.py console

vendor-console-check: venv ## the committed /console library is exactly the pinned npm package's (needs the registry)
	$(BIN)/python scripts/vendor_assets.py console --check

.PHONY: ts-gen ts-check
ts-gen: venv ## the TypeScript SDK's spec snapshot (clients/typescript/spec) and the types generated from it
	$(BIN)/python scripts/export_specs.py
	cd clients/typescript && npm ci --no-audit --no-fund && npm run gen

ts-check: venv ## the TS SDK: specs and types current, tsc --strict, npm pack contents (CI; installs with npm ci)
	$(BIN)/python scripts/export_specs.py --check
	cd clients/typescript && npm ci --no-audit --no-fund && npm run gen:check && npm run typecheck && npm run pack:check

# The README's picture of /console: the browser test that takes the screenshots, on a private stack (real Redis and
# PostgreSQL from PERSEUS_TEST_*_URL, as for make test), then its light-theme /console copied into docs/img.
.PHONY: screenshot
screenshot: venv ## retake docs/img/console.png (the README's) with the browser tests' Chromium; all pictures land in artifacts/screenshots/
	$(BIN)/python -m pytest -q -p no:randomly tests/integration/test_console_browser.py -k screenshots
	@mkdir -p docs/img && cp artifacts/screenshots/console-light.png docs/img/console.png && echo "docs/img/console.png updated"
