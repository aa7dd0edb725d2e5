# syntax=docker/dockerfile:1
# pixazo-mcp: build stage installs the locked dependencies into a venv; the runtime stage copies it.
# BASE_IMAGE must provide python3 (3.11+) with venv and pip; RUNTIME_IMAGE only the same python3 (no
# build tools, no pip). The default for both is the official slim image.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=${BASE_IMAGE}

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
# What the server never uses at run time: the installers (pip, setuptools, wheel), the AWS API
# models of every service but S3 and the credential services (botocore's data is 27 MB, S3 0.3 MB),
# and the debug symbols some wheels ship in their shared objects (uvloop's alone are 12 MB; 23 MB in
# all). binutils' strip does it; a base without it gets it from apt when it has apt, else keeps them.
# Not in a library auditwheel patched (it has an RPATH): strip breaks patchelf's layout (libvips would
# no longer load). Then everything the server loads is imported once, so a broken library fails here.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# binutils is a build-stage tool on whatever Debian-like base is given: no version to pin there.
# hadolint ignore=DL3008
RUN /opt/venv/bin/python -m pip uninstall --yes pip setuptools wheel \
    && shopt -s nullglob \
    && for service in /opt/venv/lib/python3*/site-packages/botocore/data/*/; do \
         case "$(basename "$service")" in s3|sts|sso|sso-oidc) ;; *) rm -rf "$service" ;; esac; \
       done \
    && if ! command -v strip >/dev/null && command -v apt-get >/dev/null; then \
         apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils \
           >/dev/null; \
       fi \
    && if command -v strip >/dev/null; then \
         find /opt/venv -type f -name '*.so*' -print0 | while IFS= read -r -d '' lib; do \
           sections="$(readelf -S "$lib")"; dynamic="$(readelf -d "$lib")"; \
           if [[ $sections == *.debug_info* && $dynamic != *RPATH* && $dynamic != *RUNPATH* ]]; then \
             strip --strip-debug "$lib"; \
           fi; \
         done; \
       else echo "no strip here: the shared objects keep their debug symbols"; fi \
    && /opt/venv/bin/python -c "import app.web.app, pyvips, uvloop, yaml; pyvips.Image.black(2, 2).avg()"

FROM ${RUNTIME_IMAGE} AS runtime
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
