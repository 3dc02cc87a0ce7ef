#!/usr/bin/env bash
# The GPU path, checked in one call of at most 8 minutes (issue 33):
#   1. the CUDA tests (tests/stimuli/test_cuda.py: JPEG decoding on the device against the CPU, autocast
#      maps pooled in float32, feature visualization on CUDA);
#   2. bench_stimuli.py --case resnet50 --sizes 5000: the pipeline against torchvision's canonical loop
#      on the same GPU;
#   3. bench/shard_check.py: a sharded activation pass against the unsharded one (bit-identical
#      expected; the tolerance and why are in its docstring);
#   4. bench_featurevis.py at the ImageNet size (ResNet-18, 224 px, 256 steps);
#   5. while time is left, bench_stimuli.py --case resnet50-defaults --sizes 5000 (the defaults against
#      the measures off).
# Without CUDA each step that needs it is skipped with its reason and the script still passes, so it is
# ready for the first CUDA machine:  bash bench/gpu_check.sh   (PY=... picks the interpreter).
# Exit status: 1 when a step that ran failed, else 0. Each step has its own time limit, and a step is
# started only when its limit fits in what is left of the 8 minutes.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUDGET=${GPU_CHECK_SECONDS:-470}
START=$(date +%s)
FAILED=()

left() { echo $((BUDGET - ($(date +%s) - START))); }

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    if [ "$(left)" -lt "$limit" ]; then
        echo "== $name: SKIPPED: $(left) s left of the ${BUDGET} s budget, the step may take $limit s"
        return
    fi
    echo "== $name (limit $limit s)"
    local t0=$(date +%s)
    timeout "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - t0)) s"
    if [ "$rc" -ne 0 ]; then FAILED+=("$name (exit $rc)"); fi
}

CUDA=$($PY -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')" 2>/dev/null)
echo "gpu_check: $($PY -c 'import torch; print("torch", torch.__version__)'), device: ${CUDA:-none (CPU only)}, $(nproc) CPUs"

# the tests skip themselves, each with its reason, where there is no CUDA device
step "CUDA tests" 150 env OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} $PY -m pytest tests/stimuli/test_cuda.py -q -rs -p no:cacheprovider

if [ -n "$CUDA" ]; then
    FOLDER=$(mktemp -d)
    trap 'rm -rf "$FOLDER"' EXIT
    step "pipeline vs torchvision loop, resnet50 x 5000" 200 \
        $PY bench/bench_stimuli.py --case resnet50 --sizes 5000 --repeat 1 --batch-size 256 --folder "$FOLDER"
    step "sharded vs unsharded activations" 100 $PY bench/shard_check.py --n-images 2048 --shards 3 --batch-size 256
    step "feature visualization at the ImageNet size" 60 \
        $PY bench/bench_featurevis.py --units 4 --refs 1 --demo-steps 64 --resnet-steps 256
    step "defaults vs measures off, resnet50 x 5000" 150 \
        $PY bench/bench_stimuli.py --case resnet50-defaults --sizes 5000 --batch-size 256 --folder "$FOLDER"
else
    echo "== pipeline vs torchvision loop, resnet50 x 5000: SKIPPED: no CUDA device (the CPU figures are bench_stimuli.py's own cases)"
    # the comparison itself runs on the CPU too, small, so the check is known to work before a GPU sees it
    step "sharded vs unsharded activations (CPU, small)" 240 \
        env OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY bench/shard_check.py --n-images 48 --shards 3 --batch-size 16 --network resnet18
    echo "== feature visualization at the ImageNet size: SKIPPED: no CUDA device (256 steps at 224 px take minutes per unit on a CPU)"
    echo "== defaults vs measures off, resnet50 x 5000: SKIPPED: no CUDA device (bench_stimuli.py --case resnet50-defaults at a reduced size instead)"
fi

echo "gpu_check: $(($(date +%s) - START)) s"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "PASSED (steps without CUDA skipped, as said above)"
