#!/usr/bin/env bash
# The paper-scale ledger and the --full figure times on one machine, in parallel.
#
#   scripts/paper_scale.sh OUT DEVICE LIMIT_S [SEEDS...]
#
# For each training seed K and each test file with trained claims, one process runs
# pytest FILE -m trained --scale paper --train-seed K and writes OUT/paper-seedK-FILE.json (a
# claims report; merge it with `python -m mechverify.ledger record --scale paper --seed K`).
# Beside them, one process per paper draws that paper's figures with --full from a cold cache
# of its own and logs each figure's wall time to OUT/figures-PAPER.log.  Every process gets
# LIMIT_S seconds, then SIGINT (pytest still writes its claims report for the claims it ran).
set -u
OUT=${1:?OUT folder}; DEVICE=${2:?device}; LIMIT=${3:?limit in seconds}; shift 3
SEEDS=${*:-0 1 2}
PY=${PY:-python3}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1
pids=()
for k in $SEEDS; do
  for f in $(grep -l 'kind="trained"' verify/test_*.py); do
    name=$(basename "$f" .py)
    MECHVERIFY_CACHE="$OUT/cache-claims" timeout -s INT -k 30 "$LIMIT" "$PY" -m pytest "$f" -m trained \
      --scale paper --device "$DEVICE" --train-seed "$k" --claims-report "$OUT/paper-seed$k-$name.json" \
      -q -p no:cacheprovider > "$OUT/pytest-seed$k-$name.log" 2>&1 &
    pids+=($!)
  done
done
for paper in $("$PY" -c "from mechverify.papers import PAPERS; print(' '.join(p.module for p in PAPERS))"); do
  names=$("$PY" -m mechverify.paper_figures --list | awk -v p="$paper/" 'index($1, p) == 1 {print $1}' | tr '\n' ' ')
  MECHVERIFY_CACHE="$OUT/cache-$paper" timeout -s INT -k 30 "$LIMIT" bash -c '
    for name in '"$names"'; do "$0" -m mechverify.paper_figures "$name" --full --redraw --device "$1" --out "$2" 2>&1 | grep -v "^gallery:"; done
  ' "$PY" "$DEVICE" "$OUT/figures" > "$OUT/figures-$paper.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "done"
