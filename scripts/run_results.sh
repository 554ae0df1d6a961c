#!/usr/bin/env bash
# Reproduces results/<id>/oodgen/seed<k>/ (the README's results table): the full profile with
# the variant options the README names, seeds 0-2, MNIST and Fashion-MNIST. Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${VARIANT:-"--beta wide --clip-type1 half"}
for seed in ${SEEDS:-0 1 2}; do
  for id in ${IDS:-mnist fmnist}; do
    out=results/$id/oodgen/seed$seed
    [ -f "$out/metrics.json" ] && continue
    # shellcheck disable=SC2086
    oodgen run --id "$id" --profile full --seed "$seed" --out "$out" --no-progress $VARIANT
  done
done
