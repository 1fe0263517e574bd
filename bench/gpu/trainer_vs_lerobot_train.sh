#!/usr/bin/env bash
# Fold trainer against lerobot-train on a GPU, in one short run (bench/trainer_vs_lerobot_train.py).
#
#   bash bench/gpu/trainer_vs_lerobot_train.sh prepare   # here, with internet and .venv: wheels + dataset
#   bash bench/gpu/trainer_vs_lerobot_train.sh run       # on the GPU machine (no internet), ~4-5 minutes
#
# `prepare` downloads the wheels a bare GPU image lacks (lerobot 0.6.1 and what it imports that the image
# does not preinstall; torch, numpy, pyarrow, huggingface-hub, accelerate, scikit-learn come from the
# image) into .cache/bench/gpu/whl (~55 MiB) and records the dataset DATASET (a name of DATASETS in the
# Python script; default so101_state) where that script keeps it; it prints both folders, which a device
# call carries (git-ignored), e.g. carry=[".cache/bench/gpu/whl", ".cache/bench/so101_40"].
#
# `run` installs the wheels into $SITE with --no-deps, puts it and include/ on PYTHONPATH, checks the
# imports and the GPU, then runs the comparison. Results land in $OUT (the device tool's output folder;
# default .cache/bench/gpu/out): table.txt, trainer_gpu.json, env.txt, logs.tar.gz.
#
# Settings (environment): DATASET=so101_state DEVICE=cuda STEPS=500 EVAL_EVERY=250 SAVE_EVERY=250
# REPEATS=2 THREADS=4 THEIR_WORKERS=4 (an extra lerobot-train side with --num_workers=4, its default;
# empty to skip) PYTHON=python3 SITE=/tmp/site RUN_TIMEOUT=150 (seconds per training run), and for
# `prepare` HOST_PYTHON=.venv/bin/python (the interpreter that records the dataset).
set -euo pipefail

cd "$(dirname "$0")/../.."
MODE="${1:-run}"
WHL="${WHL:-.cache/bench/gpu/whl}"
DATASET="${DATASET:-so101_state}"

if [[ "$MODE" == "prepare" ]]; then
    mkdir -p "$WHL"
    # Exact versions of .venv (requirements.txt pins lerobot 0.6.1); pandas < 3 as lerobot requires.
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" \
        lerobot==0.6.1 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 draccus==0.11.6 mergedeep==1.3.4 \
        termcolor==3.3.0 gymnasium==1.4.0 Farama-Notifications==0.0.6 av==15.1.0 h2==4.4.1 hpack==4.2.0 \
        hyperframe==6.1.0 pytz==2026.6 tzdata==2026.6 pandas==2.3.3 fsspec==2026.2.0 packaging==25.0 \
        jsonlines==4.0.0
    DATA=$("${HOST_PYTHON:-.venv/bin/python}" bench/trainer_vs_lerobot_train.py --dataset "$DATASET" --prepare-only)
    du -sh "$WHL" "$DATA"
    exit 0
fi
[[ "$MODE" == "run" ]] || { echo "usage: $0 [prepare|run]" >&2; exit 2; }

PY="${PYTHON:-python3}" SITE="${SITE:-/tmp/site}" OUT="${OUT:-.cache/bench/gpu/out}" DEVICE="${DEVICE:-cuda}"
WORK="${WORK:-/tmp/bench_trainer_gpu}" THEIR_WORKERS="${THEIR_WORKERS-4}"
mkdir -p "$OUT"
[[ -d "$WHL" ]] || { echo "error: run '$0 prepare' first and carry $WHL and the dataset" >&2; exit 2; }

started=$(date +%s)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
export PYTHONPATH="$SITE:$PWD/include${PYTHONPATH:+:$PYTHONPATH}"
export HF_HOME="${HF_HOME:-/tmp/hf}" MPLCONFIGDIR="${MPLCONFIGDIR:-/tmp/mpl}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled
echo "installed wheels in $(( $(date +%s) - started ))s" >&2

# Fail fast (before any timed run) on a missing dependency or GPU; the versions go to env.txt.
"$PY" -c "
import sys, torch, lerobot.scripts.lerobot_train, lerobot_kfold.training
if sys.argv[1] == 'cuda' and not torch.cuda.is_available():
    sys.exit('error: DEVICE=cuda but torch sees no GPU')
" "$DEVICE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/env.txt" 2>/dev/null || true

pack_logs() { tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null || true; }
trap pack_logs EXIT
extra=()
[[ -n "$THEIR_WORKERS" ]] && extra=(--their-workers $THEIR_WORKERS)
"$PY" bench/trainer_vs_lerobot_train.py --dataset "$DATASET" --device "$DEVICE" --steps "${STEPS:-500}" \
    --eval-every "${EVAL_EVERY:-250}" --save-every "${SAVE_EVERY:-250}" --repeats "${REPEATS:-2}" \
    --threads "${THREADS:-4}" --python "$PY" --work-dir "$WORK" --timeout "${RUN_TIMEOUT:-150}" \
    --json "$OUT/trainer_gpu.json" "${extra[@]}" \
    | tee "$OUT/table.txt"
echo "whole run $(( $(date +%s) - started ))s" | tee -a "$OUT/table.txt"
