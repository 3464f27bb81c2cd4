#!/bin/sh
# The nginx image's start (Dockerfile, target nginx): render flowdeck.conf from the
# environment (render.sh), make a self-signed certificate when none is mounted (a first
# local start; mount a real one at FLOWDECK_TLS_CERT/FLOWDECK_TLS_KEY), then run nginx.
set -eu
here=/etc/flowdeck/nginx
export FLOWDECK_TLS_CERT="${FLOWDECK_TLS_CERT:-/etc/flowdeck/tls/fullchain.pem}"
export FLOWDECK_TLS_KEY="${FLOWDECK_TLS_KEY:-/etc/flowdeck/tls/privkey.pem}"
if [ ! -s "$FLOWDECK_TLS_CERT" ]; then
    echo "start.sh: no certificate at $FLOWDECK_TLS_CERT: making a self-signed one" >&2
    mkdir -p "$(dirname "$FLOWDECK_TLS_CERT")" "$(dirname "$FLOWDECK_TLS_KEY")"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=${FLOWDECK_SERVER_NAME:-localhost}" \
        -keyout "$FLOWDECK_TLS_KEY" -out "$FLOWDECK_TLS_CERT" 2>/dev/null
fi
sh "$here/render.sh" "$here/flowdeck.conf" > /etc/nginx/conf.d/flowdeck.conf
nginx -t -q
exec nginx -g 'daemon off;'
