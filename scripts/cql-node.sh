#!/usr/bin/env bash
# Starts the sandbox's CQL stand-in (`telepipe sandbox --cql-listen --cql-only`, a ScyllaDB
# stand-in; see sandbox/cql/README.md) on a free 127.0.0.1 port, from the debug binary (built
# when missing). Prints `<pid> <port>` once it accepts connections.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/debug/telepipe"
[ -x "$bin" ] || (cd "$root" && cargo build -q -p telepipe >&2)
log="$root/target/cql-node.log"
TELEPIPE_LOG=warn "$bin" sandbox --cql-listen 127.0.0.1:0 --cql-only > "$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  port="$(sed -n 's/^sandbox cql on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")"
  if [ -n "$port" ]; then
    echo "$pid $port"
    exit 0
  fi
  sleep 0.1
done
echo "the CQL stand-in did not start; see $log" >&2
kill "$pid" 2>/dev/null || true
exit 1
