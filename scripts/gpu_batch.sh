#!/usr/bin/env bash
# One batch of runs on a lent GPU machine, all jobs in parallel (one process each): the
# generator-health re-run (issue "The generator must generate").
#
# Usage (on the GPU machine, from the repository root):
#   OODGEN_DATA=/path/to/datasets DEADLINE_S=500 PROFILE=full SEEDS="0 1 2" scripts/gpu_batch.sh OUTDIR
# Other knobs: SETTINGS, DEVICE, THREADS, BENCH=0 (no baselines), EXTRAS=0 (no authors' recipe or
# sweeps), PACK_EVERY (s).  Measured 2026-11-30 on one H200: 4 full MNIST/F-MNIST runs at once train
# in ~150 s (13 s per n+1 epoch); 31 jobs at once slow every job ~4x (time-sliced GPU contexts).
# The data (not in git) travels in an ignored folder named in the device tool's `carry`.
#
# Jobs, for every setting and seed:
#   * the oodgen run with the paper's Type I options (beta U[0.1,1], clipped) and the healthy
#     CVAE (LeakyReLU encoder), in results/<id>/oodgen/seed<k>; then every baseline that scores
#     its plain classifier (the confident classifier and pixel-knn do not, and are kept);
#   * the same run with beta log-uniform [0.1,28], half clipped, in results/ablation/full-wide-half/;
# plus the authors' complete recipe on F-MNIST seed 0 and the CVAE-only health sweep of the
# paper profile.  Every job writes its usual metrics.json; the new JSON / Markdown / PNG files
# and the job logs are packed into OUTDIR/results_new.tar.gz (refreshed every 20 s, so a batch cut
# short still returns what finished), the seed-0 CVAE weights into OUTDIR/cvae_weights.tar.gz.
set -u
OUTDIR=${1:?usage: scripts/gpu_batch.sh OUTDIR}
DEADLINE_S=${DEADLINE_S:-500}
PROFILE=${PROFILE:-full}
SEEDS=${SEEDS:-0 1 2}
SETTINGS=${SETTINGS:-mnist fmnist mnist0-4 fmnist0-4}
DEVICE=${DEVICE:-cuda}
# Threads per job: the evaluation's KNN searches (feature bank, 30,000-image pixel bank) run on the
# CPU; with 1 thread they took minutes per run (seen: runs killed in evaluation, 2026-11-30).
THREADS=${THREADS:-2}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR" logs_gpu
touch .gpu_batch_start
sleep 1
nvidia-smi -L 2>/dev/null || true
$PY -c "import torch, sklearn, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

T0=$(date +%s)
oo() {  # oodgen ARGS..., stopped at the batch deadline
    local left=$(( DEADLINE_S - ($(date +%s) - T0) ))
    [ "$left" -gt 5 ] || return 124
    timeout "$left" $PY -m oodgen "$@"
}
py() {  # python ARGS..., stopped at the batch deadline
    local left=$(( DEADLINE_S - ($(date +%s) - T0) ))
    [ "$left" -gt 5 ] || return 124
    timeout "$left" $PY "$@"
}
job() {  # job NAME COMMAND...: in the background, output in logs_gpu/NAME.log
    local name=$1; shift
    ( "$@" > "logs_gpu/$name.log" 2>&1; echo "exit $?" >> "logs_gpu/$name.log" ) &
}
BASELINES="msp energy max-logit knn vim mahalanobis mahalanobis-fair odin odin-fair mc-dropout mutual-info"
main_run() {  # setting seed: the oodgen run, then the baselines on its plain classifier
    for m in oodgen $BASELINES; do rm -rf "results/$1/$m/seed$2"; done
    oo run --id "$1" --profile "$PROFILE" --seed "$2" --device "$DEVICE" --no-progress \
        --out "results/$1/oodgen/seed$2" &&
    { [ "$2" != 0 ] || [ "${1#*0-4}" != "$1" ] || oo report "results/$1/oodgen/seed$2" || true; } &&
    [ "${BENCH:-1}" = 0 ] || oo bench --id "$1" --seeds "$2" --profile "$PROFILE" --device "$DEVICE" --out results --no-progress \
        --methods $BASELINES
}
pack() {
    find results docs -newer .gpu_batch_start -type f \( -name '*.json' -o -name '*.md' -o -name '*.png' \
        -o -name '*.html' -o -name '*.csv' \) > .gpu_files 2>/dev/null || true
    tar czf "$OUTDIR/.results_new.tmp" -T .gpu_files logs_gpu 2>/dev/null && \
        mv "$OUTDIR/.results_new.tmp" "$OUTDIR/results_new.tar.gz"
}

for id in $SETTINGS; do
    for s in $SEEDS; do
        job "main-$id-s$s" main_run "$id" "$s"
    done
done
for id in $SETTINGS; do
    for s in $SEEDS; do
        job "wide-$id-s$s" oo run --id "$id" --profile "$PROFILE" --seed "$s" --device "$DEVICE" \
            --no-progress --beta wide --clip-type1 half --out "results/ablation/$PROFILE-wide-half/$id/seed$s"
    done
done
[ "${EXTRAS:-1}" = 0 ] || job authors-fmnist-s0 nice -n 5 timeout "$DEADLINE_S" $PY -m oodgen run --id fmnist --profile "$PROFILE" --seed 0 \
    --device "$DEVICE" --no-progress --encoder-act relu --z mean --nullspace rref --beta authors \
    --type2-radius shell --sphere-radius authors --out "results/ablation/fmnist-$PROFILE-authors-seed0"
[ "${EXTRAS:-1}" = 0 ] || for id in ${SWEEP_SETTINGS-mnist fmnist}; do
    job "sweep-paper-$id" nice -n 10 timeout "$DEADLINE_S" $PY scripts/cvae_health_sweep.py --id "$id" \
        --profile paper --configs leaky --seeds 0 --device "$DEVICE"
    job "sweep-full-$id" nice -n 10 timeout "$DEADLINE_S" $PY scripts/cvae_health_sweep.py --id "$id" \
        --profile "$PROFILE" --configs paper --seeds $SEEDS --device "$DEVICE"
done

while [ -n "$(jobs -r)" ]; do
    sleep "${PACK_EVERY:-20}"
    pack
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
done
for id in mnist fmnist; do
    [ -f "results/$id/oodgen/seed0/detector.pt" ] && $PY -m oodgen figures "results/$id/oodgen/seed0" --out docs/figures
    d="results/ablation/$PROFILE-wide-half/$id/seed0"
    [ -f "$d/detector.pt" ] && $PY -m oodgen figures "$d" --out docs/figures/wide-half
done
pack
# The seed-0 CVAE weights (model state only), so Figure 3 and the health numbers can be redrawn here.
$PY - "$OUTDIR" <<'EOF'
import sys, tarfile, io, torch, glob
with tarfile.open(f"{sys.argv[1]}/cvae_weights.tar.gz", "w:gz") as tar:
    for path in sorted(glob.glob("results/*/oodgen/seed0/checkpoints/cvae.pt")
                       + glob.glob("results/ablation/*/checkpoints/cvae.pt")
                       + glob.glob("results/ablation/*/*/seed0/checkpoints/cvae.pt")):
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        buf = io.BytesIO(); torch.save(state, buf); data = buf.getvalue()
        info = tarfile.TarInfo(path.replace("checkpoints/cvae.pt", "cvae_weights.pt")); info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
EOF
tail -n 2 logs_gpu/*.log
