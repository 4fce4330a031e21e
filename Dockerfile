# syntax=docker/dockerfile:1
#
# One image for every mailsync process; the service is the argument:
#   docker run IMAGE subscriber | matcher | renewer | migrate | topics | status | ...
#
# Build:  docker build -t mailsync:0.1.0 .
#
# The builder stage installs the project and its dependencies into /opt/venv; the runtime stage
# copies only that venv onto a fresh python:3.11-slim (no compilers, no pip cache, no sources).
# Every dependency (aiohttp, asyncpg, cryptography, ...) ships manylinux wheels for amd64 and arm64,
# so neither stage needs a compiler. Both stages must use the same base image: the venv's
# interpreter is a symlink to the base image's /usr/local/bin/python3.11.
# Pin the base by digest in release builds: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
# Only the production package: the sandbox and the demo (./sandbox, a distribution of their own) are
# development tools and stay out of the image.
COPY services ./services
# A regular (non-editable) install: the package, its migrations (package data) and the `mailsync`
# console script land in the venv. pip byte-compiles them here, so the read-only runtime never has to.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
 && pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mailsync" \
      org.opencontainers.image.description="Microsoft 365 mail to a near-real-time customer engagement feed"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# A numeric, unprivileged user (Kubernetes' runAsNonRoot can only verify a numeric USER).
RUN groupadd --system --gid 10001 mailsync \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin mailsync
COPY --from=builder /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
# subscriber / matcher / renewer: /healthz, /readyz, /metrics (and the subscriber's public routes).
EXPOSE 8080 8081 8082
ENTRYPOINT ["mailsync"]
CMD ["--help"]
