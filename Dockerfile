# The watcher as a container: docker build -t watcher . && docker run -v watcher-data:/data watcher
# Runs with a read-only root file system: docker run --read-only -v watcher-data:/data watcher
# HTTP (/healthz, /metrics) on 9464: docker run -p 9464:9464 ...; config: -e WATCHER_CONFIG=/data/watcher.toml
# It listens on every address of the container's own network namespace (WATCHER_HTTP_HOST=0.0.0.0): outside a
# container the default is 127.0.0.1; publish the port only where the endpoints may be read.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY watcher ./watcher
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/*.whl

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin watcher \
 && mkdir -p /data && chown watcher /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels azure-servicetag-watcher && rm -rf /wheels
# The only writable place is /data: the SQLite database, its lock file, quarantined downloads and temporary
# files (TMPDIR: apprise writes attachments there). tests/test_docker_steps.py runs these steps without Docker.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WATCHER_DATABASE_URL=sqlite:////data/watcher.db \
    HOME=/data \
    TMPDIR=/data \
    WATCHER_HTTP_PORT=9464 \
    WATCHER_HTTP_HOST=0.0.0.0
VOLUME ["/data"]
WORKDIR /data
USER watcher
EXPOSE 9464
HEALTHCHECK --interval=5m --timeout=30s --start-period=2m CMD ["watcher", "status", "--check"]
ENTRYPOINT ["watcher"]
CMD ["run"]
