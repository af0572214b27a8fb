#!/usr/bin/env bash
# Seeded chaos against a real server over loopback (tests/Kestrel.Transport.IoUring.Tests/Chaos):
#
#   loadtests/chaos.sh MINUTES          # random seeds for MINUTES, each on io_uring then on Sockets (reference)
#   loadtests/chaos.sh 0 SEED           # replays one seed, once (a failing seed prints this command with its knobs)
#
# Knobs: ROW=<options row> (default: drawn per seed; rows: direct-pool ring-send inline inline-ring-send zero-copy
# zero-copy-registered sqpoll incremental-buffers one-ring pressure), CLIENTS=40 (clients per seed), MAX_MB=64
# (largest upload/download), TRANSPORT=io_uring|sockets (default both). Writes the report (markdown: seeds, rows,
# connections by kind and outcome, faults injected, failures with their replay commands) to
# loadtests/results/<time>-chaos.md, and exits non-zero when an io_uring seed failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
MINUTES="${1:?usage: loadtests/chaos.sh MINUTES [SEED]}"
SEED="${2:-}"
REPORT="$HERE/results/$(date -u +%Y-%m-%d-%H%M)-chaos.md"
mkdir -p "$HERE/results"

export CHAOS_MINUTES="$MINUTES" CHAOS_SEED="$SEED" CHAOS_ROW="${ROW:-}" CHAOS_CLIENTS="${CLIENTS:-40}" \
  CHAOS_MAX_MB="${MAX_MB:-64}" CHAOS_TRANSPORT="${TRANSPORT:-}" CHAOS_REPORT="$REPORT"

# The run lasts MINUTES plus the seed in progress; the test host's own hang detector must not cut it short.
status=0
dotnet test "$REPO/tests/Kestrel.Transport.IoUring.Tests" -c Release \
  --filter "FullyQualifiedName=Kestrel.Transport.IoUring.Tests.Chaos.ChaosTests.LongRun" \
  --logger "console;verbosity=normal" || status=$?
echo "report: $REPORT"
exit "$status"
