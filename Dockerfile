# Orderpush: one image for `orderpush gateway` (default), `stubs`, `demo`,
# `token` and `loadtest`, with the Kafka (aiokafka) and Redis extras.
#
#   docker build -t orderpush .
#   docker run -p 8000:8000 -e ORDERPUSH_BUS=kafka://kafka:9092 \
#       -e ORDERPUSH_SESSIONS=redis://redis:6379/0 -e ORDERPUSH_JWT_SECRET=... orderpush
#
# Configuration is by ORDERPUSH_* environment variables (docs/operations.md).
# The default command refuses to start without ORDERPUSH_JWT_SECRET (or
# ORDERPUSH_JWT_ALGORITHM=RS256/ES256 with ORDERPUSH_JWT_PUBLIC_KEY or
# ORDERPUSH_JWT_JWKS_URL): the image carries no usable secret. Dev mode
# (ORDERPUSH_DEV_MODE=true) is for laptops only.
# The stubs have no /healthz: run them with --no-healthcheck (or override it).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the package and its dependencies into a venv -----------
FROM ${PYTHON_IMAGE} AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

RUN python -m venv /opt/orderpush

WORKDIR /src
COPY pyproject.toml README.md ./
COPY orderpush/ orderpush/
COPY orderpush_core/ orderpush_core/
COPY gateway/ gateway/
COPY backend_stubs/ backend_stubs/
COPY web/ web/
COPY loadtest/ loadtest/
RUN /opt/orderpush/bin/pip install --no-cache-dir ".[kafka,redis]"

# ---- runtime: the venv only, as a non-root user ------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="orderpush" \
      org.opencontainers.image.description="Real-time order-status push gateway: Kafka saga events pushed to browsers over WebSocket" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/orderpush/bin:$PATH \
    HEALTHCHECK_URL=http://127.0.0.1:8000/healthz

RUN groupadd --system --gid 10001 orderpush \
    && useradd --system --uid 10001 --gid orderpush --create-home \
       --home-dir /home/orderpush --shell /usr/sbin/nologin orderpush

COPY --from=build /opt/orderpush /opt/orderpush

USER 10001:10001
WORKDIR /home/orderpush

EXPOSE 8000
# The admin listener (/metrics, /api/stats, /operator) is on 127.0.0.1:9000
# inside the container; set ORDERPUSH_ADMIN_HOST=0.0.0.0 to scrape it from a
# private network, and never publish it next to 8000.
EXPOSE 9000

# No curl in the slim image: ask /healthz with Python's standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=3)"]

ENTRYPOINT ["orderpush"]
CMD ["gateway", "--host", "0.0.0.0"]
