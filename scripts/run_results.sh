#!/usr/bin/env bash
# Reproduces results/<id>/oodgen/seed<k>/ (the README's results table): the full profile,
# seeds 0-2, the default (healthy) CVAE, and the Type I options chosen on generated outliers and
# validation data only (results/ablation/variant_choice.json, experiments/choose_variant.py):
# log-uniform beta on [0.1, 28], half the Type I samples unclipped, for every setting.
# The committed runs' CVAE encoder is `leaky` (recorded in each run's variant; CHANGELOG.md says why the
# default changed); ENCODER_ACT=leaky-all re-runs them with the current default. Their n+1 classifier has the paper's
# linear head (`--head linear`, from before selection round 6); HEAD=cosine trains them with today's default head
# (each run's config.json records which). Resumable: rerun to continue. IDS / SEEDS select a subset. REEVALUATE=1 also re-scores finished
# runs whose checkpoints are here (no retraining: new score rules, fixed evaluation code).
set -euo pipefail
cd "$(dirname "$0")/.."
variant() {
  case "$1" in
    mnist|fmnist|mnist0-4|fmnist0-4) echo "--beta wide --clip-type1 half --encoder-act ${ENCODER_ACT:-leaky} --head ${HEAD:-linear}" ;;
    *) echo "" ;;
  esac
}
for id in ${IDS:-mnist fmnist mnist0-4 fmnist0-4}; do
  for seed in ${SEEDS:-0 1 2}; do
    out=results/$id/oodgen/seed$seed
    if [ -f "$out/metrics.json" ]; then
      [ "${REEVALUATE:-0}" = 1 ] && [ -f "$out/checkpoints/nplus1.pt" ] || continue
    fi
    # shellcheck disable=SC2046
    oodgen run --id "$id" --profile full --seed "$seed" --out "$out" --no-progress $(variant "$id")
  done
done
