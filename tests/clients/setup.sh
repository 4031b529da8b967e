#!/usr/bin/env bash
# Installs the client libraries that tests/tests/clients.rs runs against the gateway, into
# target/clients (pinned versions; PyPI and npm). .ci/run calls it before the tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../target/clients"
mkdir -p "$out"
python3 -m venv "$out/venv"
"$out/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cp "$here/package.json" "$out/package.json"
(cd "$out" && npm install --silent --no-audit --no-fund >/dev/null)
touch "$out/ready"
echo "client libraries installed in $out"
