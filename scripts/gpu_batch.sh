#!/usr/bin/env bash
# One batch of benchmark runs on a lent GPU machine, all jobs in parallel (one process each).
#
# Usage (on the GPU machine, from the repository root):
#   OODGEN_DATA=/path/to/datasets DEADLINE_S=500 scripts/gpu_batch.sh OUTDIR
#
# It runs what the CPU sessions could not afford: the confident classifier (GAN) for every
# (setting, seed) whose oodgen run is committed, the 0-4 settings' seeds 1-2 with every
# detector, and the `paper` profile (Adadelta, 100 + 70 + 70 epochs) on Fashion-MNIST seed 0.
# Every job writes the usual metrics.json under results/; the new JSON / Markdown files and
# the job logs are packed into OUTDIR/results_new.tar.gz (refreshed every 30 s, so a run cut
# short still returns what finished).  Jobs stop at DEADLINE_S seconds.
set -u
OUTDIR=${1:?usage: scripts/gpu_batch.sh OUTDIR}
DEADLINE_S=${DEADLINE_S:-500}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR" logs_gpu
touch .gpu_batch_start
nvidia-smi -L || true
$PY -c "import torch, sklearn, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

T0=$(date +%s)
oo() {  # oodgen ARGS..., stopped at the batch deadline
    local left=$(( DEADLINE_S - ($(date +%s) - T0) ))
    [ "$left" -gt 5 ] || return 124
    timeout "$left" $PY -m oodgen "$@"
}
job() {  # job NAME COMMAND...: in the background, output in logs_gpu/NAME.log
    local name=$1; shift
    ( "$@" > "logs_gpu/$name.log" 2>&1; echo "exit $?" >> "logs_gpu/$name.log" ) &
}
zero4() {  # the 0-4 setting $1, seed $2: the oodgen run (same variant as seed 0), then every baseline
    oo run --id "$1" --profile full --seed "$2" --device cuda --no-progress --beta wide --clip-type1 half \
        --out "results/$1/oodgen/seed$2" &&
    oo bench --id "$1" --seeds "$2" --profile full --device cuda --out results --no-progress --methods $ALL
}
pack() {
    find results -newer .gpu_batch_start -type f \( -name '*.json' -o -name '*.md' \) > .gpu_files || true
    tar czf "$OUTDIR/.results_new.tmp" -T .gpu_files logs_gpu 2>/dev/null && mv "$OUTDIR/.results_new.tmp" "$OUTDIR/results_new.tar.gz"
}

ALL="msp energy max-logit knn vim mahalanobis mc-dropout mutual-info odin confident mahalanobis-fair odin-fair"
# Longest first.
job paper-fmnist-s0 oo run --id fmnist --profile paper --seed 0 --device cuda --no-progress \
    --out results/ablation/fmnist-paper-seed0
for id in mnist0-4 fmnist0-4; do
    for s in 1 2; do
        job "bench-$id-s$s" zero4 "$id" "$s"
    done
done
for id in mnist fmnist; do
    for s in 0 1 2; do
        job "confident-$id-s$s" oo bench --id "$id" --seeds "$s" --profile full --out results --no-progress \
            --methods confident
    done
done
for id in mnist0-4 fmnist0-4; do
    job "confident-$id-s0" oo bench --id "$id" --seeds 0 --profile full --out results --no-progress \
        --methods confident
done

while [ -n "$(jobs -r)" ]; do
    sleep 30
    pack
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
done
pack
tail -n 3 logs_gpu/*.log
