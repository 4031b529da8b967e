#!/usr/bin/env bash
# A short run of every fuzz target (fuzz/README.md): builds them once (nightly toolchain,
# cargo-fuzz, installed from crates.io when missing), then runs each for SECONDS (default 20)
# from the committed seeds into a scratch corpus (cargo fuzz's default build: optimised, with
# debug assertions and overflow checks). A crash, a leak or an input over the memory limit
# fails the script; the failing input is in fuzz/artifacts/<target>/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-20}"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz smoke: no nightly toolchain here (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz --version 0.13.2
cd "$root/fuzz"
cargo +nightly fuzz build
for target in $(cargo +nightly fuzz list); do
  work="$(mktemp -d)"
  # The targets' own scratch (a sandbox's files, a blob folder) goes under TMPDIR: libFuzzer
  # exits without running destructors, so it is removed here with the corpus.
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  echo "fuzz smoke: $target for ${secs}s"
  if ! TMPDIR="$scratch" cargo +nightly fuzz run "$target" "$work" "corpus/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    > "$work.log" 2>&1; then
    tail -n 60 "$work.log" >&2
    echo "fuzz smoke: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$work.log" || true
  rm -rf "$work" "$work.log" "$scratch"
done
