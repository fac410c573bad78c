#!/usr/bin/env bash
# The TensorRT path on a machine with an NVIDIA GPU, in one go: what is installed, the engine built and
# timed (fp16, then loaded again from the cache, then fp32 and int8), tools/compare_backends against
# ONNX Runtime on the CPU, edge doctor, and the GPU tests of tests/test_tensorrt.py. Every step runs
# even when one before it failed; the results (JSON per step and a summary) go to $OUT.
#
#   tools/gpu_check.sh                       # from the repo root, on the device
#   MODEL=path/yolox_nano.onnx CLIP=path/clip.mp4 PYTHON=python3 OUT=/tmp/gpu tools/gpu_check.sh
#
# Needs: tensorrt 10+, pycuda and a CUDA GPU for this Python, plus the package's own dependencies
# (pip install -e .[jetson] on a Jetson or an x86-64 box with an NVIDIA GPU). MODEL defaults to the
# shared model beside the repo or models/cache/yolox_nano.onnx, CLIP to the shared people clip or
# test-artifacts/gpu/clip.mp4 (copy both in and carry them when ../shared does not travel).
# Exit status: the number of steps that failed (0: all passed); 98: TensorRT cannot run here, 99: no
# model or clip.
set -u
cd "$(dirname "$0")/.." || exit 99

pick() { for p in "$@"; do [[ -e "$p" ]] && { echo "$p"; return; }; done; echo "$1"; }
PYTHON="${PYTHON:-$(pick .venv/bin/python "$(command -v python3)")}"
MODEL="${MODEL:-$(pick ../shared/models/yolox_nano.onnx models/cache/yolox_nano.onnx)}"
CLIP="${CLIP:-$(pick ../shared/data/people/intel_one-by-one-person-detection.mp4 test-artifacts/gpu/clip.mp4)}"
OUT="${OUT:-test-artifacts/gpu-check}"
RUNS="${RUNS:-500}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1
failed=0
summary="$OUT/summary.txt"
: > "$summary"

say() { echo "$*" | tee -a "$summary"; }
step() {  # step NAME COMMAND...: run it, keep its output, count a failure
    local name="$1"; shift
    echo; echo "=== $name: $*"
    local t0=$SECONDS
    if "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; then
        say "PASS  $name  ($((SECONDS - t0)) s)"
    else
        say "FAIL  $name  (exit $?, $((SECONDS - t0)) s; see $OUT/$name.err)"
        failed=$((failed + 1))
    fi
    cat "$OUT/$name.out"; tail -n 20 "$OUT/$name.err" >&2
}

say "gpu_check $(date -u +%FT%TZ) on $(uname -m), python $PYTHON"
say "model $MODEL"
say "clip  $CLIP"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || cat /etc/nv_tegra_release 2>/dev/null || echo "no nvidia-smi, no /etc/nv_tegra_release"; } | tee -a "$summary"
"$PYTHON" - <<'EOF' 2>&1 | tee -a "$summary"
import importlib
for name in ("tensorrt", "pycuda", "onnxruntime", "cv2", "numpy"):
    try:
        print(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as exc:
        print(f"{name} MISSING ({type(exc).__name__}: {exc})")
from edge.reflex.backends import probe_tensorrt
print("probe:", probe_tensorrt())
EOF
"$PYTHON" -c 'import sys; from edge.reflex.backends import probe_tensorrt as p; sys.exit(not p().available)' || {
    say "FAIL  TensorRT cannot run here (see probe above): nothing to check"; exit 98; }
for f in "$MODEL" "$CLIP"; do
    [[ -e "$f" ]] || { say "FAIL  missing $f (set MODEL / CLIP)"; exit 99; }
done

# INT8 calibration frames: every 10th frame of the clip, as an installer would collect from a camera.
"$PYTHON" - "$CLIP" "$WORK/calib" <<'EOF'
import sys, cv2, pathlib
out = pathlib.Path(sys.argv[2]); out.mkdir()
cap = cv2.VideoCapture(sys.argv[1]); i = n = 0
while True:
    ok, img = cap.read()
    if not ok: break
    if i % 10 == 0:
        cv2.imwrite(str(out / f"f{i:05d}.jpg"), img); n += 1
    i += 1
print(f"{n} calibration frames")
EOF

ENGINES="$WORK/engines"
BUILD=("$PYTHON" tools/build_engine --model "$MODEL" --cache "$ENGINES" --runs "$RUNS" --json)
step build_fp16       "${BUILD[@]}" --precision fp16
step cached_fp16      "${BUILD[@]}" --precision fp16          # must say built: false
step build_fp32       "${BUILD[@]}" --precision fp32
step build_int8       "${BUILD[@]}" --precision int8 --calibration-frames "$WORK/calib"
COMPARE=("$PYTHON" tools/compare_backends "$CLIP" --model "$MODEL" --every 5 --max-frames 200
         --b onnxruntime:provider=cpu --json)
step compare_fp16     "${COMPARE[@]}" --a "tensorrt:precision=fp16,cache=$ENGINES"
step compare_fp32     "${COMPARE[@]}" --a "tensorrt:precision=fp32,cache=$ENGINES" --min-iou 0.98 --max-score-diff 0.01
step compare_int8     "${COMPARE[@]}" --a "tensorrt:precision=int8,cache=$ENGINES" --min-iou 0.8 --max-score-diff 0.1

cat > "$WORK/edge.yaml" <<EOF
data_dir: $WORK/data
model:
  path: $(realpath "$MODEL")
  engine_cache: $ENGINES
cameras:
  clip:
    source: $(realpath "$CLIP")
EOF
step doctor           "$PYTHON" -m edge doctor --config "$WORK/edge.yaml"
step pytest_tensorrt  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_tensorrt.py

echo; echo "=== results"
"$PYTHON" - "$OUT" <<'EOF' | tee -a "$summary"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    try:
        return json.loads((out / f"{name}.out").read_text().strip().splitlines()[-1])
    except Exception:
        return None
for name in ("build_fp16", "cached_fp16", "build_fp32", "build_int8"):
    r = load(name)
    if r:
        ms = r["infer_ms"]
        print(f"{name:12} {r['precision']:5} built={r['built']} build {r['build_s']} s, ready {r['ready_s']} s, "
              f"infer median {ms['median']} ms p99 {ms['p99']} ms ({r['runs']} runs) on {r['gpu']}, TRT {r['tensorrt']}")
for name in ("compare_fp16", "compare_fp32", "compare_int8"):
    r = load(name)
    if r:
        print(f"{name:12} agree={r['agree']} frames {r['frames']} paired {r['detections']['paired']}"
              f"/{r['detections']['a']}/{r['detections']['b']} IoU median {r['iou']['median']} worst {r['iou']['worst']}"
              f", score diff median {r['score_diff']['median']} worst {r['score_diff']['worst']}"
              f", only a {r['only_a']['count']} only b {r['only_b']['count']}"
              f", infer ms a {r['infer_ms_median']['a']} b {r['infer_ms_median']['b']} {r['problems'] or ''}")
EOF
say "steps failed: $failed"
exit "$failed"
