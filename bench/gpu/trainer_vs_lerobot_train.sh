#!/usr/bin/env bash
# Fold trainer against lerobot-train on a GPU, in one short run (bench/trainer_vs_lerobot_train.py).
#
#   bash bench/gpu/trainer_vs_lerobot_train.sh prepare   # here, with internet and .venv: wheels + dataset
#   bash bench/gpu/trainer_vs_lerobot_train.sh run       # on the GPU machine (no internet), ~6-8 minutes
#
# `prepare` downloads the wheels a bare GPU image lacks (lerobot 0.6.1 and what it imports that the image
# does not preinstall; torch, torchvision, numpy, pyarrow, huggingface-hub, accelerate, scikit-learn come
# from the image) into .cache/bench/gpu/whl (~55 MiB) and records the dataset DATASET (a name of DATASETS
# in the Python script; default so101_camera_480: two 480x640 cameras, 8 episodes, ~7 MiB) where that
# script keeps it; it prints both folders, which a device call carries (git-ignored, 64 MiB in all),
# e.g. carry=[".cache/bench/gpu/whl", ".cache/bench/so101_camera_480_8"].
#
# `run` installs the wheels into $SITE with --no-deps, puts it and include/ on PYTHONPATH, checks the
# imports and the GPU, then runs the comparison once per batch size in BATCHES: ours (float32, and bf16
# autocast), lerobot-train with its default 4 DataLoader workers, and the model-only step (lerobot's
# update on batches already on the GPU, float32 and bf16: the limit of any data path). Validation and
# checkpoints only at the last step, so the timed loop is training alone. Results land in $OUT (the device
# tool's output folder; default .cache/bench/gpu/out): table_b<B>.txt, trainer_gpu_b<B>.json, env.txt,
# logs.tar.gz.
#
# Settings (environment): DATASET=so101_camera_480 POLICY=lerobot (lerobot's default ACT; 'small': the
# demo ACT) DEVICE=cuda BATCHES="8 32" STEPS=200 REPEATS=1 THREADS=8 THEIR_WORKERS=4 PRECISIONS="no bf16"
# MODEL_ONLY=1 PYTHON=python3 SITE=/tmp/site RUN_TIMEOUT=240 (seconds per training run), and for
# `prepare` HOST_PYTHON=.venv/bin/python (the interpreter that records the dataset).
set -euo pipefail

cd "$(dirname "$0")/../.."
MODE="${1:-run}"
WHL="${WHL:-.cache/bench/gpu/whl}"
DATASET="${DATASET:-so101_camera_480}"

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
WORK="${WORK:-/tmp/bench_trainer_gpu}" THEIR_WORKERS="${THEIR_WORKERS-4}" PRECISIONS="${PRECISIONS:-no bf16}"
mkdir -p "$OUT"
[[ -d "$WHL" ]] || { echo "error: run '$0 prepare' first and carry $WHL and the dataset" >&2; exit 2; }

started=$(date +%s)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
export PYTHONPATH="$SITE:$PWD/include${PYTHONPATH:+:$PYTHONPATH}"
export HF_HOME="${HF_HOME:-/tmp/hf}" MPLCONFIGDIR="${MPLCONFIGDIR:-/tmp/mpl}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled
echo "installed wheels in $(( $(date +%s) - started ))s" >&2

# Fail fast (before any timed run) on a missing dependency or GPU; the versions go to env.txt.
"$PY" -c "
import sys, torch, torchvision, av, lerobot.scripts.lerobot_train, lerobot_kfold.training, lerobot_kfold.frame_cache
if sys.argv[1] == 'cuda' and not torch.cuda.is_available():
    sys.exit('error: DEVICE=cuda but torch sees no GPU')
from lerobot_kfold.fold_data import video_backend
print('video backend', video_backend(), file=sys.stderr)
" "$DEVICE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/env.txt" 2>/dev/null || true

pack_logs() { tar -czf "$OUT/logs.tar.gz" -C "$WORK" . 2>/dev/null || true; }
trap pack_logs EXIT
extra=(--precisions $PRECISIONS)
[[ -n "$THEIR_WORKERS" ]] && extra+=(--their-workers $THEIR_WORKERS)
[[ "${MODEL_ONLY:-1}" == 1 ]] && extra+=(--model-only)
STEPS="${STEPS:-200}"
for BATCH in ${BATCHES:-8 32}; do
    "$PY" bench/trainer_vs_lerobot_train.py --dataset "$DATASET" --policy "${POLICY:-lerobot}" \
        --device "$DEVICE" --steps "$STEPS" --eval-every "$STEPS" --save-every "$STEPS" --batch-size "$BATCH" \
        --k 4 --repeats "${REPEATS:-1}" --threads "${THREADS:-8}" --python "$PY" --work-dir "$WORK/b$BATCH" \
        --timeout "${RUN_TIMEOUT:-240}" --json "$OUT/trainer_gpu_b$BATCH.json" "${extra[@]}" \
        | tee "$OUT/table_b$BATCH.txt"
done
echo "whole run $(( $(date +%s) - started ))s" | tee -a "$OUT/table_b${BATCH}.txt"
