#!/usr/bin/env bash
# Reproduces results/<id>/oodgen/seed<k>/ (the README's results table): the full profile,
# seeds 0-2, with the variant options chosen per setting by the ablation in results/ablation/
# (MNIST: log-uniform beta, half the Type I samples unclipped; Fashion-MNIST: the paper's
# defaults). Resumable: rerun to continue. IDS / SEEDS select a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
variant() {
  case "$1" in
    mnist) echo "--beta wide --clip-type1 half" ;;
    *) echo "" ;;
  esac
}
for id in ${IDS:-mnist fmnist}; do
  for seed in ${SEEDS:-0 1 2}; do
    out=results/$id/oodgen/seed$seed
    [ -f "$out/metrics.json" ] && continue
    # shellcheck disable=SC2046
    oodgen run --id "$id" --profile full --seed "$seed" --out "$out" --no-progress $(variant "$id")
  done
done
