#!/usr/bin/env bash
# What a new user meets in the first minutes, from a fresh clone in fresh virtual environments:
# the README's two quick-start commands (read from the README itself, so they are checked as
# written), the three headline commands, and five mistakes a newcomer makes. Each command's exit
# status and time are printed, with the status it should give; the script exits 1 when any
# differs. It reinstalls everything (several GB of wheels): run it by hand before a release,
# not in CI.
#
#   scripts/newcomer_check.sh [--work DIR] [--repo PATH] [--pytest-args 'ARGS']
#
#   --work DIR         where the clone and its virtual environments go (default: a new folder in
#                      $TMPDIR, kept afterwards for inspection)
#   --repo PATH        the repository to clone (default: this script's checkout; its current
#                      branch is cloned, so commit first)
#   --pytest-args ARGS replace the test command's arguments (default: the README's own, the whole
#                      suite: ~8 minutes on 2 quiet cores). E.g. 'tests/engine/test_engine_demo.py -x -q'
#
# Needs git, python3 >= 3.10 and the package index pip is configured with; reads the shared
# video at ../shared/data/video next to the repository (or $CYCLEMASK_SHARED/data/video) when
# present, and makes a short one otherwise.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="$HERE"
WORK=""
PYTEST_ARGS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --work) WORK="$2"; shift 2 ;;
        --repo) REPO="$2"; shift 2 ;;
        --pytest-args) PYTEST_ARGS="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "newcomer_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$WORK" ] || WORK="$(mktemp -d "${TMPDIR:-/tmp}/cyclemask-newcomer-XXXXXX")"
mkdir -p "$WORK" || exit 2
WORK="$(cd "$WORK" && pwd)"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
SHARED="${CYCLEMASK_SHARED:-$(dirname "$REPO")/shared}"
# A new user has no cache yet: auto's remembered backend choice and OpenVINO's compiled models
# would otherwise come from this machine's earlier runs.
export CYCLEMASK_CACHE_DIR="$WORK/cache"
# The clone sits away from ../shared: the benchmarks read the shared faces from here instead.
[ -d "$SHARED" ] && export CYCLEMASK_SHARED="$SHARED"
BRANCH="$(git -C "$REPO" rev-parse --abbrev-ref HEAD)"
CLONE="$WORK/cyclemask"

ROWS=()
FAILED=0
LAST_LOG=""

# step NAME EXPECTED COMMAND: run COMMAND with bash in the clone, log its output, record its
# status and wall time. EXPECTED is a status or several separated by '|'.
step() {
    local name="$1" expected="$2" cmd="$3" log t0 t1 rc secs verdict
    log="$LOGS/$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_').log"
    LAST_LOG="$log"
    echo ">>> $name: $cmd" >&2
    t0=$(date +%s.%N)
    (cd "$CLONE" && bash -c "$cmd") >"$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    secs=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
    verdict=ok
    if ! [[ "|$expected|" == *"|$rc|"* ]]; then verdict=UNEXPECTED; FAILED=1; fi
    echo "    exit $rc (expected $expected) in $secs s: $verdict; log $log" >&2
    ROWS+=("| $name | \`$cmd\` | $rc | $expected | $secs | $verdict |")
    return 0
}

# check NAME CONDITION-COMMAND DESCRIPTION: a follow-up assertion on what a step left behind.
check() {
    local name="$1" cmd="$2" what="$3"
    if (cd "$CLONE" && bash -c "$cmd") >>"$LOGS/checks.log" 2>&1; then
        ROWS+=("| $name | $what | - | - | - | ok |")
    else
        ROWS+=("| $name | $what | - | - | - | UNEXPECTED |"); FAILED=1
    fi
}

echo "newcomer check: clone of $REPO ($BRANCH) in $CLONE; logs in $LOGS" >&2
git clone --quiet --branch "$BRANCH" "$REPO" "$CLONE" || { echo "git clone failed" >&2; exit 2; }

# The README's quick-start lines, as written: the first command line after each heading.
quick_start() {
    awk -v n="$1" 'index($0, "**" n ".") == 1 {found = 1} found && /^python3 -m venv/ {print; exit}' "$CLONE/README.md"
}
QS1="$(quick_start 1)"
QS2="$(quick_start 2)"
if [ -z "$QS1" ] || [ -z "$QS2" ]; then
    echo "README.md: cannot find the two quick-start command lines (after '**1.' and '**2.')" >&2
    exit 2
fi
# The venv folders the quick start creates: the first `python3 -m venv DIR` of each line.
VENV1="$(echo "$QS1" | sed -n 's/^python3 -m venv \([^ ]*\).*/\1/p')"
VENV2="$(echo "$QS2" | sed -n 's/^python3 -m venv \([^ ]*\).*/\1/p')"
[ "$VENV1" != "$VENV2" ] || echo "note: both quick-start lines use the virtual environment $VENV1" >&2
if [ -n "$PYTEST_ARGS" ]; then
    QS2="${QS2% python -m pytest*} python -m pytest $PYTEST_ARGS"
fi

# -- the two quick-start commands ---------------------------------------------------------------
step "quick start 1 (install, demo)" 0 "$QS1"
step "quick start 2 (install with torch, tests)" 0 "$QS2"
check "quick start writes the demo sheet" "test -s demo_out/before_after.png" "demo_out/before_after.png exists"
step "install sizes" 0 "du -sh $VENV1 $VENV2"

RUN=". $VENV1/bin/activate &&"
DEV=". $VENV2/bin/activate &&"

# -- the three headline commands ----------------------------------------------------------------
VIDEO="$SHARED/data/video/head-pose-face-detection-female-and-male.mp4"
if [ ! -f "$VIDEO" ]; then
    VIDEO="$WORK/talk.mp4"
    (cd "$CLONE" && . "$VENV2/bin/activate" && python -c "
import sys; sys.path.insert(0, '.')
from benchmarks.inputs import make_video
make_video(sys.argv[1], 48)" "$VIDEO") >"$LOGS/make_video.log" 2>&1
fi
step "export --fp16" 0 "$DEV cyclemask-export --checkpoint cyclemask/assets/demo/generators.pt --fp16 --out exported"
step "run --video --unmask" 0 "$RUN cyclemask-run --video '$VIDEO' --unmask --out '$WORK/talk_unmask.mp4' --no-progress"
step "benchmark (quick table)" 0 "$DEV python benchmarks/throughput.py"

# -- five mistakes ------------------------------------------------------------------------------
step "mistake: export --fp16 without --checkpoint" 2 "$DEV cyclemask-export --fp16"
mkdir -p "$WORK/no_faces"
(. "$CLONE/$VENV1/bin/activate" && python -c "
import sys, numpy as np, cv2
rng = np.random.default_rng(0)
for i in range(4):
    cv2.imwrite(f'{sys.argv[1]}/{i}.png', rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))" "$WORK/no_faces") \
    >"$LOGS/make_no_faces.log" 2>&1
step "mistake: --mask --unmask together" 2 "$RUN cyclemask-run --images '$WORK/no_faces' --mask --unmask --out '$WORK/both'"
step "mistake: --unmask on a folder without faces" 0 "$RUN cyclemask-run --images '$WORK/no_faces' --unmask --out '$WORK/no_faces_unmask' --no-progress"
check "no faces: one warning line naming the flags" \
    "test \$(grep -c '^warning: no face found.*--aligned.*--min-face.*--detect-score' '$LAST_LOG') = 1" \
    "one 'warning: no face found' line with --aligned, --min-face, --detect-score"
BENCH_TMP="$WORK/bench_tmp"
mkdir -p "$BENCH_TMP"
step "mistake: benchmark stopped by SIGTERM after 120 s" "143|0" \
    "$DEV TMPDIR='$BENCH_TMP' timeout --preserve-status -s TERM 120 python benchmarks/throughput.py"
check "stopped benchmark: partial table, 'stopped', no temporary folder" \
    "grep -q '^| full |' '$LAST_LOG' && grep -q -e '^stopped: interrupted (SIGTERM)' -e '^Load average at end' '$LAST_LOG' && ! ls -d '$BENCH_TMP'/cyclemask-bench-* 2>/dev/null" \
    "a table row, 'stopped: interrupted (SIGTERM)' (or the whole table, on a fast machine), and no cyclemask-bench-* left in $BENCH_TMP"
step "mistake: git status after the quick start" 0 "test -z \"\$(git status --porcelain)\" || { git status --porcelain; false; }"

# -- report -------------------------------------------------------------------------------------
echo
echo "Newcomer check of $REPO ($BRANCH, $(git -C "$CLONE" rev-parse --short HEAD)), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| step | command | exit | expected | seconds | |"
echo "|---|---|---:|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "logs: $LOGS"
exit $FAILED
