#!/usr/bin/env bash
# The GPU figures in one go, for a machine with an NVIDIA GPU and PyTorch but no internet and no ffmpeg:
#   wheels of what it lacks in .whl/ (pydantic, pydantic_core, annotated_types, typing_inspection, ultralytics, lap,
#   dill, and imageio-ffmpeg for a static ffmpeg binary; see README "Figures"), a normalised 10 s clip in
#   .devclip/clip.mp4. Writes the figures to ${OUT:-.}/gpu-*.txt.
set -uo pipefail
out=${OUT:-.}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
if ! command -v ffmpeg >/dev/null; then  # the pose step decodes with ffmpeg: imageio-ffmpeg's static build
  mkdir -p /tmp/bin && ln -sf "$(ls /tmp/site/imageio_ffmpeg/binaries/ffmpeg-* | head -n 1)" /tmp/bin/ffmpeg
  export PATH=/tmp/bin:$PATH
fi
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false PYTHONUNBUFFERED=1 YOLO_CONFIG_DIR=/tmp/yolo-config
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, ultralytics; print('torch', torch.__version__, 'ultralytics', ultralytics.__version__)"
  ffmpeg -version | head -n 1
  nproc; } 2>&1 | tee "$out/gpu-machine.txt"
python3 -m pytest -q -p no:cacheprovider --noconftest tests/model/test_input_path.py 2>&1 | tail -n 3 \
  | tee "$out/gpu-tests.txt"
for batch in 64 128; do
  timeout 200 python3 -m benchmarks.bench_pose --device cuda --clip .devclip/clip.mp4 --clips "${CLIPS:-32}" \
    --batch "$batch" --workers "${WORKERS:-4}" --rcnn-frames 20 --json 2>&1 | grep -v Warning | tee -a "$out/gpu-pose.txt"
done
[ "${SKIP_TRAIN:-0}" = 1 ] || timeout 200 python3 -m benchmarks.bench_train --device cuda --json 2>&1 \
  | tee "$out/gpu-train.txt"
