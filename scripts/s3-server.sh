#!/usr/bin/env bash
# Starts an S3-protocol server (moto 5.1.18's server, from PyPI, in target/moto) on a free
# 127.0.0.1 port with the bucket `telepipe-test`, for the S3 blob-store tests. Prints
# `<pid> <port>` once the bucket exists. Credentials: any (AWS_ACCESS_KEY_ID=test ...).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/moto"
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.1.18' >&2
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$venv/server-$port.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$port/telepipe-test', method='PUT'))" 2>/dev/null; then
    echo "$pid $port"
    exit 0
  fi
  sleep 0.1
done
echo "the S3 server did not start; see $venv/server-$port.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
