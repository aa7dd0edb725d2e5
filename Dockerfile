# syntax=docker/dockerfile:1
# pixazo-mcp: build stage installs the locked dependencies into a venv; the runtime stage copies it.
# BASE_IMAGE must provide python3 (3.11+) with venv; the default is the official slim image.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY requirements.lock ./
# Exactly the locked versions, nothing resolved at build time; pip check proves the lock is complete.
RUN /opt/venv/bin/pip install --no-deps -r requirements.lock && /opt/venv/bin/pip check
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/pip check

FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIXAZO_DB_PATH=/data/pixazo.db \
    PIXAZO_IMAGE_DIR=/data/images \
    PIXAZO_PORT=8000
RUN groupadd --system --gid 10001 pixazo \
    && useradd --system --uid 10001 --gid pixazo --home-dir /data --no-create-home --shell /usr/sbin/nologin pixazo \
    && mkdir -p /data \
    && chown pixazo:pixazo /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PIXAZO_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["pixazo-mcp"]
CMD ["serve", "--host", "0.0.0.0"]
