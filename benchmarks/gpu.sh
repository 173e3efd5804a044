#!/usr/bin/env bash
# The GPU figures in one go, for a machine with an NVIDIA GPU and PyTorch but no internet and no ffmpeg:
#   wheels of what it lacks in .whl/ (pydantic, ultralytics, lap, dill, ...; see README "Figures"),
#   an already normalised clip in .devclip/clip.mp4. Writes the figures to ${OUT:-.}/gpu-*.txt.
set -uo pipefail
out=${OUT:-.}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false PYTHONUNBUFFERED=1 YOLO_CONFIG_DIR=/tmp/yolo-config
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, ultralytics; print('torch', torch.__version__, 'ultralytics', ultralytics.__version__)"
  nproc; } 2>&1 | tee "$out/gpu-machine.txt"
for batch in 16 64; do
  timeout 240 python3 -m benchmarks.bench_pose --device cuda --clip .devclip/clip.mp4 --batch "$batch" \
    --rcnn-frames 20 2>&1 | tail -n 3 | tee -a "$out/gpu-pose.txt"
done
[ "${SKIP_TRAIN:-0}" = 1 ] || timeout 300 python3 -m benchmarks.bench_train 2>&1 | tee "$out/gpu-train.txt"
