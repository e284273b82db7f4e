#!/usr/bin/env bash
# The GPU check: one prepared run for a CUDA machine without a package index (the project's lent GPU
# machine: Python 3.12, a CUDA torch 2.11, transformers, accelerate, safetensors, onnxruntime; no
# diffusers, peft, insightface or pillow-heif). In under 9 minutes it installs the carried wheels, runs the
# preflight (devtools/packages.py: the serving code's imports, versions against the pins),
# tests/test_compile_fallback.py (the eager fallback on compile failures) on that machine's torch, then the
# benchmark on random real-size weights, eager and compiled, and writes everything into one folder.
#
#   bash scripts/gpu_check.sh --download   # here, with PyPI (make wheels-gpu): the wheels into the folder
#   bash scripts/gpu_check.sh --dry-run    # here: the wheels are there and installable, the preflight
#                                          # passes with this machine's packages; then it stops
#   bash scripts/gpu_check.sh              # on the GPU machine
#
# Environment: OUT (the output folder; default outputs/gpu-check), GPU_CHECK_WHEELS (the wheel folder;
# default .cache/wheels-gpu), PYTHON (default .venv/bin/python where it exists, else python3),
# GPU_CHECK_SECONDS (the whole run's budget, default 530), GPU_CHECK_RUNS (requests per row, default 3),
# GPU_CHECK_SPEEDS (default Turbo,Default: Quality is Default's code with 45 steps instead of 28),
# GPU_CHECK_MODES (default "eager compiled"; "compiled" gives a cold compile the whole budget).
# Output (at most 8 files, as the device tool brings back): check.log (everything, with timestamps),
# preflight.json, test_compile.log, eager.txt / eager.json and compiled.txt / compiled.json (the
# benchmark's tables and reports; a report cut short by the budget says "complete": false).
set -uo pipefail
cd "$(dirname "$0")/.."

# The distributions the GPU machine lacks (or has at another version than the pins), at requirements.txt's
# versions; docs/PERFORMANCE.md lists the same. All are py3-none-any but pillow-heif (cp312 manylinux).
WHEELS=(diffusers peft insightface pillow-heif transformers)
MAX_WHEELS_MIB=55
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

WHEELS_DIR=${GPU_CHECK_WHEELS:-.cache/wheels-gpu}
OUT_DIR=${OUT:-outputs/gpu-check}
BUDGET=${GPU_CHECK_SECONDS:-530}
RUNS=${GPU_CHECK_RUNS:-3}
SPEEDS=${GPU_CHECK_SPEEDS:-Turbo,Default}
read -r -a MODES <<<"${GPU_CHECK_MODES:-eager compiled}"
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

mode=run
case ${1:-} in
    --download) mode=download ;;
    --dry-run) mode=dry-run ;;
    "") ;;
    *) echo "usage: bash scripts/gpu_check.sh [--download | --dry-run]" >&2; exit 2 ;;
esac

mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/check.log
[[ $mode == run ]] && : >"$LOG"
log() { printf '[%s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$SECONDS" "$*" | tee -a "$LOG"; }

pin() {  # the version requirements.txt pins for a distribution
    local version
    version=$(grep -iE "^$1==" requirements.txt | head -1 | cut -d= -f3)
    [[ -n $version ]] || { echo "gpu_check: $1 is not pinned in requirements.txt" >&2; exit 2; }
    echo "$version"
}

wheel_file() {  # the one wheel of name==version in the folder, or nothing
    local stem=${1//-/_}
    compgen -G "$WHEELS_DIR/${stem}-$2-*.whl" | head -1
}

download() {
    mkdir -p "$WHEELS_DIR"
    local name version platform_args=()
    for platform in "${PLATFORMS[@]}"; do platform_args+=(--platform "$platform"); done
    for name in "${WHEELS[@]}"; do
        version=$(pin "$name")
        if [[ -n $(wheel_file "$name" "$version") ]]; then continue; fi
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp "${platform_args[@]}" -d "$WHEELS_DIR" "$name==$version" || exit 1
    done
}

check_wheels() {  # every wheel there once, installable on cp312 manylinux x86_64, within the size cap
    local name version file missing=() stem total
    for name in "${WHEELS[@]}"; do
        version=$(pin "$name")
        file=$(wheel_file "$name" "$version")
        if [[ -z $file ]]; then missing+=("$name==$version"); continue; fi
        stem=${name//-/_}
        if [[ $(compgen -G "$WHEELS_DIR/${stem}-*.whl" | wc -l) -ne 1 ]]; then
            echo "gpu_check: more than one $name wheel in $WHEELS_DIR: keep only $name==$version" >&2
            return 1
        fi
    done
    if ((${#missing[@]})); then
        echo "gpu_check: missing wheels in $WHEELS_DIR: ${missing[*]}. Run \`make wheels-gpu\` here." >&2
        return 1
    fi
    total=$(du -cb "$WHEELS_DIR"/*.whl | tail -1 | cut -f1)
    log "wheels: ${#WHEELS[@]} in $WHEELS_DIR, $((total / 1024 / 1024)) MiB (cap $MAX_WHEELS_MIB MiB)"
    if ((total > MAX_WHEELS_MIB * 1024 * 1024)); then
        echo "gpu_check: $WHEELS_DIR holds over $MAX_WHEELS_MIB MiB: the device tool carries 64 MiB" >&2
        return 1
    fi
    local platform_args=()
    for platform in "${PLATFORMS[@]}"; do platform_args+=(--platform "$platform"); done
    "$PYTHON" -m pip install --quiet --dry-run --no-index --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${platform_args[@]}" \
        --target "$(mktemp -d)" "$WHEELS_DIR"/*.whl ||
        { echo "gpu_check: the wheels do not install on cp312 manylinux x86_64" >&2; return 1; }
}

left() { echo $((BUDGET - SECONDS)); }

if [[ $mode == download ]]; then
    download && check_wheels && log "wheels ready in $WHEELS_DIR"
    exit
fi

if [[ $mode == dry-run ]]; then
    check_wheels || exit 1
    "$PYTHON" -m devtools.packages --json "$OUT_DIR/preflight.json" || exit 1
    log "dry run: the wheels and the preflight are ready; stopping before the install and the GPU work"
    exit 0
fi

# ---- on the GPU machine
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
log "gpu_check on $(hostname): budget ${BUDGET} s, runs $RUNS, speeds $SPEEDS, python $("$PYTHON" -V 2>&1)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"
check_wheels || exit 1
SITE=$(mktemp -d /tmp/gpu-check-site.XXXX)
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS_DIR"/*.whl 2>&1 | tee -a "$LOG"
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
log "installed the wheels into $SITE"

"$PYTHON" -m devtools.packages --pins requirements-gpu.txt --json "$OUT_DIR/preflight.json" 2>&1 |
    tee -a "$LOG"
preflight=${PIPESTATUS[0]}
if ((preflight != 0)); then log "preflight failed: stopping"; exit 1; fi

# The fallback's test (about a minute): the whole-UNet tests of every path take minutes of tracing on a CPU
# and run in CI; the compiled benchmark below is the no-recompilation check on the GPU itself.
log "tests/test_compile_fallback.py on $("$PYTHON" -c 'import torch; print(torch.__version__)')"
timeout "$(($(left) < 120 ? $(left) : 120))" "$PYTHON" -m pytest -p no:cacheprovider -p no:xdist -q \
    tests/test_compile_fallback.py >"$OUT_DIR/test_compile.log" 2>&1
tests=$?
tail -5 "$OUT_DIR/test_compile.log" | tee -a "$LOG"
log "tests/test_compile_fallback.py: exit $tests"

WEIGHTS=$(mktemp -d /tmp/gpu-check-weights.XXXX)
benchmark() {  # $1: eager or compiled, $2: seconds
    local switch=off
    [[ $1 == compiled ]] && switch=on
    log "benchmark $1 (--compile $switch), at most $2 s"
    timeout --kill-after=10 "$2" "$PYTHON" scripts/benchmark.py --profile random --weights-dir "$WEIGHTS" \
        --runs "$RUNS" --speeds "$SPEEDS" --compile "$switch" --verbose --json "$OUT_DIR/$1.json" \
        >"$OUT_DIR/$1.txt" 2> >(tee -a "$LOG" >&2)
    local status=$?
    log "benchmark $1: exit $status$( ((status == 124)) && echo ' (the budget ran out: partial report)')"
}
# The first run writes the weights (about a minute). Eager before compiled gets at most 180 s, leaving
# the compiled run (setup compiles the UNet) the rest; a run cut short keeps a partial report.
for mode_name in "${MODES[@]}"; do
    case $mode_name in eager | compiled) ;; *) log "unknown mode $mode_name: eager or compiled"; exit 2 ;; esac
    seconds=$(left)
    if [[ $mode_name == eager && ${MODES[-1]} == compiled ]]; then
        seconds=$((seconds - 200 < 180 ? seconds - 200 : 180))
    fi
    benchmark "$mode_name" "$((seconds > 30 ? seconds : 30))"
done
for mode_name in "${MODES[@]}"; do cat "$OUT_DIR/$mode_name.txt" >>"$LOG"; done
log "done: $OUT_DIR"
