#!/bin/sh
# Writes platform/nginx/flowdeck.conf with its placeholders replaced (the list is at the top of
# that file), from the environment; a variable left unset keeps the shipped value, so with
# none set the output is the file itself. POSIX sh and sed only: it runs in the nginx image.
#
#   FLOWDECK_SERVER_NAME=flowdeck.example.org FLOWDECK_UPSTREAMS="web1:8000 web2:8000" \
#     sh render.sh flowdeck.conf > /etc/nginx/conf.d/flowdeck.conf
set -eu

src="${1:?usage: render.sh path/to/flowdeck.conf > output}"
name="${FLOWDECK_SERVER_NAME:-flowdeck.example.com}"
cert="${FLOWDECK_TLS_CERT:-/etc/letsencrypt/live/flowdeck.example.com/fullchain.pem}"
key="${FLOWDECK_TLS_KEY:-/etc/letsencrypt/live/flowdeck.example.com/privkey.pem}"
upstreams="${FLOWDECK_UPSTREAMS:-127.0.0.1:8001 127.0.0.1:8002}"
http_port="${FLOWDECK_HTTP_PORT:-80}"
https_port="${FLOWDECK_HTTPS_PORT:-443}"
static_root="${FLOWDECK_STATIC_ROOT:-/var/lib/flowdeck/staticfiles/}"

# sed replacement text: `|` (the separator) and `&` escaped.
esc() { printf '%s' "$1" | sed -e 's/[|&\\]/\\&/g'; }

servers=""
for upstream in $upstreams; do
    servers="${servers}    server $(esc "$upstream");\\n"
done
servers="${servers%\\n}"

sed -e "s|^    server 127\.0\.0\.1:8001;\$|${servers}|" \
    -e '/^    server 127\.0\.0\.1:8002;$/d' \
    -e "s|^    ssl_certificate     /etc/letsencrypt/live/flowdeck\.example\.com/fullchain\.pem;\$|    ssl_certificate     $(esc "$cert");|" \
    -e "s|^    ssl_certificate_key /etc/letsencrypt/live/flowdeck\.example\.com/privkey\.pem;\$|    ssl_certificate_key $(esc "$key");|" \
    -e "s|^    server_name flowdeck\.example\.com;\$|    server_name $(esc "$name");|" \
    -e "s|^    listen 80;\$|    listen $(esc "$http_port");|" \
    -e "s|^    listen 443 ssl http2;|    listen $(esc "$https_port") ssl http2;|" \
    -e "s|^        alias /var/lib/flowdeck/staticfiles/;\$|        alias $(esc "$static_root");|" \
    "$src"
