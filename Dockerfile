# One image for every Perseus process: `perseus core` (the default), `perseus rest`, `perseus ws`,
# `perseus migrate`. Configuration is PERSEUS_* variables only (docs/configuration.md).
#
#   docker build -t perseus:0.1.0 .
#   docker run --rm -e PERSEUS_DATABASE_URL=... perseus:0.1.0 migrate
#   docker run -e PERSEUS_DATABASE_URL=... -e PERSEUS_REDIS_URL=... -p 50051:50051 perseus:0.1.0
#
# CI lints this file with hadolint (make lint-deploy); no Docker engine runs there, so CI never builds it.
# Pin the base by digest (python:3.11-slim-trixie@sha256:...) in a release pipeline.
ARG PYTHON_IMAGE=python:3.11-slim-trixie

# --- build: wheels for the server distribution and its exact pins, then a venv from those wheels only ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the server distribution packages: the SDK (clients/), tests, docs and benches stay out.
COPY pyproject.toml README.md LICENSE ./
COPY common/ common/
COPY core/ core/
COPY gateways/ gateways/
COPY perseus_cli/ perseus_cli/
COPY proto/ proto/
# Every dependency is pinned with == in pyproject.toml and ships a CPython 3.11 manylinux wheel, so no
# compiler is needed. The venv is built from /wheels alone (--no-index): what was wheeled is what runs.
RUN pip wheel --wheel-dir /wheels . \
    && python -m venv /opt/perseus \
    && /opt/perseus/bin/pip install --no-index --find-links /wheels perseus \
    && /opt/perseus/bin/pip uninstall --yes pip \
    && /opt/perseus/bin/python -m compileall -q /opt/perseus/lib
COPY deploy/docker/healthcheck.py /opt/perseus/libexec/healthcheck.py

# --- runtime: the venv on a slim base, run as an unprivileged user with no login and no home to write ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="perseus" \
      org.opencontainers.image.description="Perseus market data: gRPC core, REST and WebSocket gateways" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 perseus \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin perseus
COPY --from=build /opt/perseus /opt/perseus
ENV PATH=/opt/perseus/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PERSEUS_CORE_ADDR=0.0.0.0:50051 \
    PERSEUS_REST_ADDR=0.0.0.0:8000 \
    PERSEUS_WS_ADDR=0.0.0.0:8001 \
    PERSEUS_CORE_METRICS_ADDR=0.0.0.0:9464
# gRPC core, REST gateway, WS gateway, the core's /metrics (the gateways serve /metrics on their own port).
EXPOSE 50051 8000 8001 9464
USER 10001:10001
WORKDIR /tmp
# core: grpc.health.v1 SERVING; rest/ws: GET /health is 200; migrate: nothing to probe (healthcheck.py).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-I", "/opt/perseus/libexec/healthcheck.py"]
# Exec form: perseus is PID 1 and gets SIGTERM itself, which it handles (drain, then exit).
ENTRYPOINT ["perseus"]
CMD ["core"]
