#!/usr/bin/env bash
# Fold trainer against lerobot-train on a GPU, in one short run (bench/trainer_vs_lerobot_train.py).
#
# Two steps:
#
#   bash bench/gpu/trainer_vs_lerobot_train.sh prepare   # here, with internet and .venv: wheels + dataset
#   bash bench/gpu/trainer_vs_lerobot_train.sh run       # on the GPU machine (no internet), ~4-5 minutes
#
# `prepare` downloads the wheels a bare GPU image lacks (lerobot 0.6.1 and the dependencies it imports
# that the image does not preinstall; torch, torchvision, numpy, pyarrow, huggingface-hub, accelerate,
# scikit-learn ... are taken from the image) into .cache/bench/gpu/whl (~55 MiB), and records the
# 40-episode simulator dataset into .cache/bench/so101_40. Both folders are git-ignored; a device call
# carries them:  carry=[".cache/bench/gpu/whl", ".cache/bench/so101_40"].
#
# `run` installs the wheels into $SITE (default /tmp/site) with --no-deps, puts it and include/ on
# PYTHONPATH, checks the imports and the GPU, then runs the comparison. Results land in $OUT (the device
# tool's output folder; default .cache/bench/gpu/out): table.txt, trainer_gpu.json, env.txt, logs.tar.gz.
#
# Settings (environment): DEVICE=cuda STEPS=500 EVAL_EVERY=250 SAVE_EVERY=250 REPEATS=2 THREADS=4
# THEIR_WORKERS=4 (an extra lerobot-train side with --num_workers=4, its default; empty to skip)
# PYTHON=python3 SITE=/tmp/site RUN_TIMEOUT=150 (seconds per training run).
set -euo pipefail

cd "$(dirname "$0")/../.."
MODE="${1:-run}"
WHL="${WHL:-.cache/bench/gpu/whl}"
DATA="${DATA:-.cache/bench/so101_40}"

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
    if [[ ! -f "$DATA/meta/info.json" ]]; then
        HF_HUB_OFFLINE=1 MPLCONFIGDIR=.cache/matplotlib .venv/bin/python -m lerobot_kfold demo-dataset \
            --root "$DATA" --episodes 40 >/dev/null
    fi
    du -sh "$WHL" "$DATA"
    exit 0
fi
[[ "$MODE" == "run" ]] || { echo "usage: $0 [prepare|run]" >&2; exit 2; }

PY="${PYTHON:-python3}"
SITE="${SITE:-/tmp/site}"
OUT="${OUT:-.cache/bench/gpu/out}"
DEVICE="${DEVICE:-cuda}"
STEPS="${STEPS:-500}"
EVAL_EVERY="${EVAL_EVERY:-250}"
SAVE_EVERY="${SAVE_EVERY:-250}"
REPEATS="${REPEATS:-2}"
THREADS="${THREADS:-4}"
THEIR_WORKERS="${THEIR_WORKERS-4}"
RUN_TIMEOUT="${RUN_TIMEOUT:-150}"
WORK="${WORK:-/tmp/bench_trainer_gpu}"
mkdir -p "$OUT"
[[ -d "$WHL" && -f "$DATA/meta/info.json" ]] || { echo "error: run '$0 prepare' first (and carry $WHL and $DATA)" >&2; exit 2; }

started=$(date +%s)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
export PYTHONPATH="$SITE:$PWD/include${PYTHONPATH:+:$PYTHONPATH}"
export HF_HOME="${HF_HOME:-/tmp/hf}" MPLCONFIGDIR="${MPLCONFIGDIR:-/tmp/mpl}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled
echo "installed wheels in $(( $(date +%s) - started ))s" >&2

# Fail fast (before any timed run) on a missing dependency or a missing GPU.
"$PY" - "$DEVICE" <<'EOF' | tee "$OUT/env.txt"
import importlib.metadata as md, platform, sys
import torch
import lerobot.scripts.lerobot_train  # noqa: F401  (the whole import chain of lerobot-train)
import lerobot_kfold.training  # noqa: F401
from lerobot_kfold.fold_data import PreloadedDataset  # noqa: F401
device = sys.argv[1]
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("error: DEVICE=cuda but torch sees no GPU")
print("python", platform.python_version(), "torch", torch.__version__,
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for name in ("lerobot", "datasets", "numpy", "pandas", "pyarrow", "huggingface-hub", "accelerate", "av", "scikit-learn"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "missing")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/env.txt" 2>/dev/null || true
echo "nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/env.txt"

pack_logs() { tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null || true; }
trap pack_logs EXIT
extra=()
[[ -n "$THEIR_WORKERS" ]] && extra=(--their-workers $THEIR_WORKERS)
"$PY" bench/trainer_vs_lerobot_train.py --root "$DATA" --device "$DEVICE" --steps "$STEPS" \
    --eval-every "$EVAL_EVERY" --save-every "$SAVE_EVERY" --repeats "$REPEATS" --threads "$THREADS" \
    --python "$PY" --work-dir "$WORK" --timeout "$RUN_TIMEOUT" --json "$OUT/trainer_gpu.json" \
    "${extra[@]}" | tee "$OUT/table.txt"
echo "whole run $(( $(date +%s) - started ))s" | tee -a "$OUT/table.txt"
