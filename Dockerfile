# syntax=docker/dockerfile:1
# Flowdeck's container images, one build: `runtime` (web, worker and beat: the command
# decides which, see docker-compose.yml and ops/processes.py) and `nginx` (Debian's nginx with
# platform/nginx/flowdeck.conf and the static files of the same build).
#   docker build --target runtime -t flowdeck .
#   docker build --target nginx -t flowdeck-nginx .

# --- the front end (the editor and run viewer island), built with Node ----------------------
FROM node:20-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
# vite writes to ../static/build (frontend/vite.config.ts)
RUN npm run build

# --- Python dependencies, in a virtualenv of their own (a layer that changes with
# pyproject.toml only, not with every source change) -------------------------------------------
FROM python:3.11-slim-bookworm AS python-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt

# --- the runtime: slim Python, the code, the built front end, collected static files ---------
FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 flowdeck \
    && useradd --system --uid 10001 --gid flowdeck --home-dir /app --shell /usr/sbin/nologin flowdeck \
    && mkdir -p /var/lib/flowdeck \
    && chown flowdeck:flowdeck /var/lib/flowdeck
COPY --from=python-deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    FLOWDECK_DATA_DIR=/var/lib/flowdeck \
    FLOWDECK_STATIC_ROOT=/app/staticfiles
WORKDIR /app
# The code is root's and read-only to the service user; only the data directory is its.
COPY . /app
COPY --from=frontend /src/static/build /app/static/build
# collectstatic needs settings but no database or secrets: a throwaway data directory (the
# embedded default) keeps generated secrets out of the image.
RUN FLOWDECK_DATA_DIR=/tmp/build-data python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/build-data
USER flowdeck
EXPOSE 8000
# The web process (ops.processes.web_command); docker-compose.yml runs the worker and beat
# from the same image with their own commands.
CMD ["python", "-m", "ops.web", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "config.asgi:application"]

# --- nginx in front: TLS, WebSocket, SSE, static files ------------------------------------
FROM debian:bookworm-slim AS nginx
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx openssl \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
COPY platform/nginx/flowdeck.conf platform/nginx/render.sh platform/nginx/start.sh /etc/flowdeck/nginx/
COPY --from=runtime /app/staticfiles /var/lib/flowdeck/staticfiles
EXPOSE 80 443
CMD ["sh", "/etc/flowdeck/nginx/start.sh"]
