#!/usr/bin/env bash
# One pass of echobench's GPU checks on a single GPU, with no network access:
#   scripts/gpu_check.sh --quick   under 4 minutes on one H100 (setup, GPU probe, a subset of the gpu
#                                  tests, the eager and compile rows at batch 8)
#   scripts/gpu_check.sh           (full) under 8 minutes: every gpu test, every exact-output engine
#                                  row, the optional engines when installed, one training epoch,
#                                  training cells packed 2, 4, 8 per GPU (compiled and not)
#
# The budget is enforced, not estimated: every step runs under `timeout` with the smaller of its own
# limit and what is left of the run's budget (GPU_CHECK_BUDGET, default 230 s quick / 470 s full)
# after reserving the summary's time; a step that no longer fits is recorded as skipped ("no time
# left"). So the run ends within the budget even if every step runs into its limit, and the summary
# (reports/gpu/summary.{json,md}) is written in every case: after the last step, or from a trap
# when the script is interrupted.
#
# Steps, each recorded with its exit status and wall time whatever happened to the ones before it:
#   setup    pick a Python (see scripts/README.md), install what is missing from the wheels beside this
#            script (pip --no-index: never the network), `pip install -e . --no-deps`
#   gpu      which GPU torch sees (reports/gpu/gpu.json); without one the GPU steps are skipped
#   tests    the tests marked `gpu` (the engines' parity tests), junit XML in reports/gpu/
#   row:*    one `echobench bench engines --config sd15 --random-init` row per process
#            (reports/gpu/rows/<row>.json), so no row can run graphs another row compiled; the
#            optional engines (onnxruntime with a GPU provider, tensorrt) get rows of their own only
#            when installed, after the required rows; merged into reports/gpu/bench_engines.json
#   train    `echobench bench train --device cuda --json` (reports/gpu/bench_train.json; full only)
#   packed:* `echobench bench train --device cuda --concurrent 2 4 8 [--compile] --json`: one ResNet-18 cell
#            alone vs 2, 4 and 8 cells at once on the GPU, uncompiled, then compiled (full only), merged
#            into reports/gpu/bench_train_concurrent.json, which the dry run's packed projection reads
#   runtime  bench_engines.json converted to the runtime report's measurements, then
#            `echobench report --runtime ... --out reports/gpu` (runtime.md, runtime.json)
#   summary  reports/gpu/summary.{json,md}: date, mode, GPU, every step's status and time, the numbers
# Exit status 0 only when every step succeeded.
set -uo pipefail

SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
export SCRIPT_DIR REPO
export WHEELS="${GPU_CHECK_WHEELS:-$SCRIPT_DIR/wheels}"
export VENV="${GPU_CHECK_VENV:-$REPO/.venv-gpu}"
OUT="${GPU_CHECK_OUT:-reports/gpu}"
cd "$REPO" || exit 2
mkdir -p "$OUT/logs" || exit 2
OUT="$(cd "$OUT" && pwd)"
export OUT
export PY_FILE="$OUT/logs/python.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONUNBUFFERED=1

MODE=full
for arg in "$@"; do
    case $arg in
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $arg (use --quick or --full)" >&2; exit 2 ;;
    esac
done
export MODE
# Per-step limits (seconds; overridable through the environment). Every step also gets at most what is
# left of the budget (`slot`), so these are ceilings: their sum may exceed the budget, the run cannot.
# Measured wall times of earlier runs: reports/gpu/README.md.
if [ "$MODE" = quick ]; then
    BUDGET="${GPU_CHECK_BUDGET:-230}"
    T_TESTS="${T_TESTS:-50}"
else
    BUDGET="${GPU_CHECK_BUDGET:-470}"
    T_TESTS="${T_TESTS:-80}"
fi
T_SETUP="${T_SETUP:-40}"
T_GPU="${T_GPU:-15}"
T_ROW="${T_ROW:-35}"                 # an eager row: build sd15 (random init), reference + row at batch 8
T_ROW_COMPILE="${T_ROW_COMPILE:-80}" # a compile row: inductor compiles the fused step (+ CUDA graphs)
T_ROW_OPTIONAL="${T_ROW_OPTIONAL:-60}" # onnxruntime / tensorrt: export + session or plan build
T_TRAIN="${T_TRAIN:-30}"
T_PACKED="${T_PACKED:-70}"                 # solo + 2, 4, 8 cells (one process each), 20,000 images per cell
T_PACKED_COMPILE="${T_PACKED_COMPILE:-110}" # the same compiled: inductor + CUDA graphs in every cell's warm-up
PACKED_N="${PACKED_N:-20000}"
T_RUNTIME="${T_RUNTIME:-10}"
T_SUMMARY="${T_SUMMARY:-8}"
KILL_AFTER=3
MIN_SLOT=10  # a step that would get less than this is skipped instead
# A previous run's results must not pass for this one's (a skipped step would leave them in place).
rm -f "$OUT"/{gpu.json,pytest_gpu.xml,bench_engines.json,bench_train.json,runtime_measurements.json} \
    "$OUT"/{bench_train_concurrent.json,packed_plain.json,packed_compiled.json} \
    "$OUT"/{runtime.md,runtime.json,summary.md,summary.json} "$OUT"/logs/*.log "$OUT"/logs/python.txt \
    "$OUT"/rows/*.json
STEPS="$OUT/steps.tsv"
printf 'step\tstatus\texit\tseconds\tlimit_s\tlog\tnote\n' >"$STEPS"
RUN_STARTED=$(date +%s.%N)
export RUN_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

record() {  # NAME STATUS EXIT SECONDS LIMIT LOG NOTE
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$STEPS"
    echo "== $1: $2 (exit $3, $4 s)" >&2
}

# run_step NAME LIMIT STDOUT CMD...: runs CMD under timeout; STDOUT "-" sends stdout to the log too.
# Exit 124 is timeout's TERM, 137 its KILL after the grace period.
run_step() {
    local name=$1 limit=$2 stdout=$3 log shown started rc status
    shift 3
    log="$OUT/logs/$name.log"
    shown="$*"
    shown=${shown//$'\n'/ }
    echo "== $name (limit ${limit} s): ${shown:0:200}" >&2
    started=$(date +%s.%N)
    if [ "$stdout" = "-" ]; then
        timeout --kill-after="$KILL_AFTER" "$limit" "$@" >"$log" 2>&1
    else
        timeout --kill-after="$KILL_AFTER" "$limit" "$@" >"$stdout" 2>"$log"
    fi
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status=timeout ;;
        *) status=failed ;;
    esac
    record "$name" "$status" "$rc" "$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" \
        "$limit" "${log#"$REPO"/}" "${STEP_NOTE:-}"
    STEP_NOTE=""
    return "$rc"
}

skip_step() {  # NAME REASON
    record "$1" skipped - 0 - - "$2"
}

elapsed() { awk -v a="$RUN_STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%d", b - a }'; }

# slot WANTED: the limit a step gets now: WANTED, or less when less is left of the budget once the
# summary's time and the kill grace are reserved; 0 when less than MIN_SLOT is left.
slot() {
    local left=$((BUDGET - $(elapsed) - T_SUMMARY - 2 * KILL_AFTER))
    if [ "$left" -lt "$MIN_SLOT" ]; then echo 0
    elif [ "$left" -lt "$1" ]; then echo "$left"
    else echo "$1"; fi
}

# timed_step NAME WANTED STDOUT CMD...: run_step within the budget, or skipped when it no longer fits.
timed_step() {
    local name=$1 limit
    limit=$(slot "$2")
    shift 2
    if [ "$limit" = 0 ]; then
        skip_step "$name" "no time left in the $MODE budget (${BUDGET} s)"
        return 99
    fi
    run_step "$name" "$limit" "$@"
}

# --- (f) summary -------------------------------------------------------------------------------------
IFS= read -r -d '' SUMMARY <<'PY' || true
import csv, json, subprocess, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, run_date, total = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
mode, budget = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else ("full", "?")


def load(name):
    try:
        return json.loads((out / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cell(value, spec=""):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return "" if value is None else str(value).replace("|", "/").replace("\n", " ")


with open(out / "steps.tsv", encoding="utf-8") as f:
    steps = list(csv.DictReader(f, delimiter="\t"))
gpu, train, engines = load("gpu.json") or {}, load("bench_train.json"), load("bench_engines.json")
packed = load("bench_train_concurrent.json")
tests, cases = None, []
try:
    root = ET.parse(out / "pytest_gpu.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    for case in suite.iter("testcase"):  # each test's outcome and the numbers it recorded (record_property)
        bad = next((case.find(k) for k in ("failure", "error", "skipped") if case.find(k) is not None), None)
        cases.append({"test": case.get("name"), "seconds": float(case.get("time", 0)),
                      "outcome": "passed" if bad is None else bad.tag,
                      "message": None if bad is None else (bad.get("message") or "")[:200],
                      "properties": {p.get("name"): p.get("value") for p in case.iter("property")}})
except (OSError, ET.ParseError, AttributeError):
    pass
try:
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    git = None
ok = all(s["status"] == "ok" for s in steps)
doc = {"date": run_date, "mode": mode, "budget_s": budget, "gpu": gpu, "git": git, "python": sys.version.split()[0], "total_seconds": round(total, 1),
       "ok": ok, "steps": steps, "tests": tests, "test_cases": cases, "bench_train": train, "bench_engines": engines,
       "bench_train_concurrent": packed}
(out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

where = (f"{gpu['name']} ({gpu.get('memory_gib')} GiB, compute capability {gpu.get('capability')}, driver "
         f"{gpu.get('driver')})" if gpu.get("name") else "none visible to torch")
md = [f"# GPU check ({mode}, budget {budget} s), {run_date}", "",
      f"GPU: {where}; torch {gpu.get('torch')}, CUDA {gpu.get('cuda')}, Python {doc['python']}, commit {git}.", "",
      f"Result: {'every step passed' if ok else 'NOT every step passed'}; {total:.0f} s in all.", "",
      "| step | status | exit | seconds | limit (s) | log | note |", "|---|---|---|---|---|---|---|"]
md += [f"| {s['step']} | {s['status']} | {s['exit']} | {s['seconds']} | {s['limit_s']} | {s['log']} | {cell(s['note'])} |"
       for s in steps]
if tests:
    md += ["", f"Tests marked gpu: {tests['tests']} collected, {tests['failures']} failed, {tests['errors']} errors, "
               f"{tests['skipped']} skipped.", "",
           "| test | outcome | seconds | measured | message |", "|---|---|---|---|---|"]
    md += [f"| {c['test']} | {c['outcome']} | {c['seconds']:.1f} | "
           f"{cell(', '.join(f'{k} {v}' for k, v in c['properties'].items()))} | {cell(c['message'])} |" for c in cases]
if train:
    md += ["", "## One training epoch (bench train)", "",
           f"{train.get('model')}, {train.get('protocol')} protocol, batch {train.get('batch_size')}, {train.get('n')} "
           f"random images, {train.get('precision')}, channels_last {train.get('channels_last')}: "
           f"{cell(train.get('images_per_s'), '.0f')} images/s, {cell(train.get('seconds_per_epoch'), '.2f')} s per "
           f"epoch, peak memory {cell(train.get('peak_memory_mib'), '.0f')} MiB ({train.get('peak_memory_kind')})."]
if packed:
    md += ["", "## Several training cells per GPU (bench train --concurrent)", "",
           f"{packed.get('model')}, {packed.get('n')} random images per cell, batch {packed.get('batch_size')}, one "
           f"process per cell; aggregate images/s against one uncompiled cell alone.", "",
           "| cells | compiled | images/s (all) | x 1 cell | peak MiB per cell | GPU MiB per process | warm-up s | error |",
           "|---|---|---|---|---|---|---|---|"]
    for r in packed.get("rows", []):
        md.append(f"| {r.get('cells')} | {r.get('compile')} | {cell(r.get('aggregate_images_per_s'), '.0f')} | "
                  f"{cell(r.get('speedup_vs_solo'), '.2f')} | {cell(r.get('peak_memory_mib_per_cell'), '.0f')} | "
                  f"{cell(r.get('gpu_process_mib_per_cell'), '.0f')} | {cell(r.get('warmup_seconds_max'), '.1f')} | "
                  f"{cell(r.get('error'))} |")
converted = load("runtime_measurements.json")
if converted:
    md += ["", "## EchoMod engines (bench engines)", "",
           "| row | batch | images/s | s/step | peak MiB | max abs pixel diff vs reference | note |",
           "|---|---|---|---|---|---|---|"]
    for m in converted.get("measurements", []):
        md.append(f"| {m['engine']} | {m['batch_size']} | {cell(m.get('images_per_s'), '.2f')} | "
                  f"{cell(m.get('seconds_per_step'), '.4f')} | {cell(m.get('peak_mib'), '.0f')} | "
                  f"{cell(m.get('parity_max_abs'), '.2e')} | |")
    for k in converted.get("skipped", []):
        md.append(f"| {k['engine']} | {cell(k.get('batch_size'))} | | | | | {cell(k.get('why'))} |")
elif engines:
    md += ["", "bench engines wrote bench_engines.json, but it could not be converted: see logs/runtime.log."]
if (out / "runtime.md").exists():
    md += ["", "The runtime report with these measurements: runtime.md, runtime.json."]
(out / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")
print("\n".join(md))
PY
SUMMARY_WRITTEN=0
write_summary() {
    [ "$SUMMARY_WRITTEN" = 1 ] && return 0
    SUMMARY_WRITTEN=1
    local total
    total=$(awk -v a="$RUN_STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    timeout --kill-after="$KILL_AFTER" "$T_SUMMARY" "${PY:-python3}" -c "$SUMMARY" "$OUT" "$RUN_DATE" "$total" "$MODE" "$BUDGET"
}
# If the script itself is interrupted (Ctrl-C, or an outer timeout's TERM), the summary of the steps
# recorded so far is still written.
trap 'echo "gpu_check: interrupted; writing the summary of the steps so far" >&2; write_summary; exit 130' INT TERM

# --- (a) setup -------------------------------------------------------------------------------------
# module:distribution pairs. Required: echobench's own dependencies (an editable --no-deps install
# does not bring them), the SD 1.5 + ControlNet stack and pytest. Optional: the engines that
# `bench engines` reports as unavailable when they are missing. "a|b": the first of these that has a
# wheel; CU is torch's CUDA major version (TensorRT's wheels are per CUDA major: tensorrt-cu12, -cu13).
export REQUIRED="numpy:numpy scipy:scipy yaml:pyyaml tabulate:tabulate tqdm:tqdm cv2:opencv-python-headless
matplotlib:matplotlib PIL:pillow safetensors:safetensors huggingface_hub:huggingface-hub transformers:transformers
diffusers:diffusers pytest:pytest"
export OPTIONAL="accelerate:accelerate onnx:onnx onnxscript:onnxscript onnxruntime:onnxruntime-gpu tensorrt:tensorrt-cuCU|tensorrt"

setup_env() {
    local py base failed=0 dist alt cuda_major installed
    # A Python that imports torch: $GPU_CHECK_PYTHON, else the checkout's .venv, else python3 itself
    # when it already is a virtual environment, else a venv over python3's site-packages (so the
    # machine's torch + CUDA stay visible and nothing is installed into the system Python).
    if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
        py=$GPU_CHECK_PYTHON
    elif [ -x "$REPO/.venv/bin/python" ] && "$REPO/.venv/bin/python" -c 'import torch' 2>/dev/null; then
        py=$REPO/.venv/bin/python
    else
        base=$(command -v python3 || command -v python)
        if "$base" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
            py=$base
        else
            [ -x "$VENV/bin/python" ] || "$base" -m venv --system-site-packages "$VENV" || true
            if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
                py=$VENV/bin/python
            else
                echo "setup: no usable venv over $base; installing into $base itself"
                py=$base
            fi
        fi
    fi
    echo "$py" >"$PY_FILE"
    echo "setup: python $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
    "$py" -c 'import torch; print("setup: torch", torch.__version__, "CUDA", torch.version.cuda)' || {
        echo "setup: torch is not importable with $py (torch + CUDA are assumed present)"; failed=1; }
    [ -d "$WHEELS" ] || echo "setup: no wheels directory at $WHEELS: nothing can be installed"

    missing_of() {  # the distributions of the pairs whose module is not importable
        "$py" -c 'import importlib.util as u, sys
print(" ".join(p.split(":")[1] for p in sys.argv[1:] if u.find_spec(p.split(":")[0]) is None))' "$@"
    }
    install() {  # one distribution at a time, so one missing wheel does not block the others
        [ -d "$WHEELS" ] && "$py" -m pip install --no-index --find-links "$WHEELS" -q "$@"
    }
    # shellcheck disable=SC2086  # the lists are meant to split on whitespace
    for dist in $(missing_of $REQUIRED); do
        if install "$dist"; then echo "setup: installed $dist"; else echo "setup: REQUIRED $dist missing, no wheel installed"; failed=1; fi
    done
    # --no-build-isolation: the build backend comes from this environment, not an index. It needs
    # setuptools ≥ 64 for editable installs, and before 70.1 also the `wheel` package (bdist_wheel); a
    # fresh venv's bundled setuptools can be older, or absent (Python ≥ 3.12).
    if ! "$py" -c 'import importlib.util as u, sys
try:
    import setuptools
    v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
except Exception:
    v = (0,)
sys.exit(0 if v >= (70, 1) or (v >= (64,) and u.find_spec("wheel")) else 1)'; then
        if install -U "setuptools>=70.1"; then echo "setup: installed setuptools>=70.1"
        elif install -U "setuptools>=64" && install wheel; then echo "setup: installed setuptools>=64 and wheel"
        else echo "setup: no setuptools ≥ 64 (+ wheel) among the wheels: the editable install will fail"; fi
    fi
    if "$py" -m pip install --no-index --no-deps --no-build-isolation -q -e "$REPO"; then
        echo "setup: echobench installed (editable)"
    else
        echo "setup: pip install -e . failed; the steps below still run echobench from the checkout"
        failed=1
    fi
    cuda_major=$("$py" -c 'import torch; print((torch.version.cuda or "none").split(".")[0])' 2>/dev/null)
    # shellcheck disable=SC2086
    for dist in $(missing_of ${OPTIONAL//CU/${cuda_major:-none}}); do
        installed=""
        for alt in ${dist//|/ }; do
            if install "$alt"; then installed=$alt; break; fi
        done
        if [ -n "$installed" ]; then echo "setup: installed $installed"; else echo "setup: optional ${dist//|/ or } not installed (no wheel)"; fi
    done
    "$py" -c 'import onnxruntime as o; print("setup: onnxruntime providers:", o.get_available_providers())' 2>/dev/null || true
    "$py" -c 'import tensorrt as t; print("setup: tensorrt", t.__version__)' 2>/dev/null || echo "setup: tensorrt not importable"
    return "$failed"
}
export -f setup_env

timed_step setup "$T_SETUP" - bash -c setup_env
PY=$(cat "$PY_FILE" 2>/dev/null || true)
PY=${PY:-${GPU_CHECK_PYTHON:-python3}}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # echobench from this checkout even if setup failed

# --- the GPU -----------------------------------------------------------------------------------------
IFS= read -r -d '' GPU_PROBE <<'PY' || true  # read -d '': the whole snippet, verbatim
import json, subprocess, sys
import torch
doc = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if doc["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    doc.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
               count=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version())
try:
    doc["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=10).stdout.split("\n")[0].strip() or None
except (OSError, subprocess.SubprocessError):
    doc["driver"] = None
print(json.dumps(doc, indent=2))
sys.exit(0 if doc["cuda_available"] else 1)
PY
if timed_step gpu "$T_GPU" "$OUT/gpu.json" "$PY" -c "$GPU_PROBE"; then
    HAVE_GPU=1
    GPU_NAME=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$OUT/gpu.json" 2>/dev/null)
else
    HAVE_GPU=0
    GPU_NAME=""
fi

# --- (b) tests marked gpu ----------------------------------------------------------------------------
if [ "$HAVE_GPU" = 1 ]; then
    # pytest exits 5 when no test is collected: then nothing was checked, and the step fails. Quick:
    # the engines' parity tests without the bench and training ones (their rows are timed below).
    STEP_NOTE="pytest -m gpu; exit 5 means no test marked gpu was collected"
    QUICK_K=()
    [ "$MODE" = quick ] && QUICK_K=(-k "not bench_engines and not train")
    timed_step tests "$T_TESTS" - "$PY" -m pytest -o addopts= -m gpu -q -p no:cacheprovider \
        --junitxml="$OUT/pytest_gpu.xml" ${QUICK_K[@]+"${QUICK_K[@]}"} tests
else
    skip_step tests "no CUDA GPU visible to torch"
fi

# --- (c) EchoMod engines: one row per process ----------------------------------------------------------
# Each row is its own `bench engines` process (the reference pipeline row, then the engine row, at
# batch 8: sd15 512², 20 UniPC steps, CFG): compiled graphs, CUDA graphs and allocator state never
# carry over from one row to the next. Rows that give exact outputs first, the compiled ones after the
# eager ones (a row cut short by the budget loses the least), the optional engines last and only when
# their runtime is installed (each needs an ONNX export and a session or a TensorRT plan build).
mkdir -p "$OUT/rows"
ROWS_QUICK="eager compile"
ROWS_FULL="eager eager[fuse_qkv=true] compile compile[fuse_qkv=true] compile[compile_vae=true]"

row_slug() { echo "$1" | tr -c 'A-Za-z0-9_=\n-' '_' | sed 's/_*$//'; }

run_row() {  # ROW LIMIT
    local row=$1 limit=$2 slug
    slug=$(row_slug "$row")
    timed_step "row:$row" "$limit" - "$PY" -m echobench bench engines --config sd15 --random-init --resolution 512 \
        --batch-sizes 8 --steps 20 --engines "$row" --json --out "$OUT/rows/$slug.json"
}

optional_engine() {  # NAME: 0 when its runtime can run on this GPU
    case $1 in
        onnxruntime) "$PY" -c 'import onnx, onnxscript, onnxruntime as o, sys
sys.exit(0 if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(o.get_available_providers()) else 1)' 2>/dev/null ;;
        tensorrt) "$PY" -c 'import onnx, onnxscript, tensorrt' 2>/dev/null ;;
        *) return 1 ;;
    esac
}

if [ "$HAVE_GPU" = 1 ]; then
    if [ "$MODE" = quick ]; then rows=$ROWS_QUICK; else rows=$ROWS_FULL; fi
    for row in $rows; do
        case $row in compile*) limit=$T_ROW_COMPILE ;; *) limit=$T_ROW ;; esac
        run_row "$row" "$limit"
    done
    if [ "$MODE" = full ]; then
        for engine in onnxruntime tensorrt; do
            if optional_engine "$engine"; then
                run_row "$engine" "$T_ROW_OPTIONAL"
            else
                skip_step "row:$engine" "optional: its runtime (or onnxscript, or a GPU provider) is not installed"
            fi
        done
    fi
else
    skip_step "rows" "no CUDA GPU visible to torch"
fi

# The rows' documents → one bench_engines.json: the first row's header and reference row, every row's
# engine row. A row that was cut short still contributes what it wrote ("complete": false).
IFS= read -r -d '' MERGE <<'PY' || true
import json, sys
from pathlib import Path

out, merged = Path(sys.argv[1]), None
for path in sorted((out / "rows").glob("*.json"), key=lambda p: p.stat().st_mtime):
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        continue
    if merged is None:
        merged = {**doc, "rows": {}, "speedup_vs_reference": {}, "row_files": []}
    merged["row_files"].append(path.name)
    merged["complete"] = merged.get("complete", True) and bool(doc.get("complete"))
    for name, row in (doc.get("rows") or {}).items():
        if name == "diffusers-pipeline" and name in merged["rows"]:
            continue  # the first process's reference row stands for all
        merged["rows"][name] = row
    merged["speedup_vs_reference"].update(doc.get("speedup_vs_reference") or {})
if merged is not None:
    (out / "bench_engines.json").write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    print(f"merged {len(merged['row_files'])} row file(s)")
PY
"$PY" -c "$MERGE" "$OUT" || echo "gpu_check: merging the rows failed" >&2

# --- (d) one training epoch --------------------------------------------------------------------------
if [ "$HAVE_GPU" = 1 ] && [ "$MODE" = full ]; then
    timed_step train "$T_TRAIN" "$OUT/bench_train.json" "$PY" -m echobench bench train --device cuda --json
elif [ "$HAVE_GPU" = 1 ]; then
    skip_step train "full mode only"
else
    skip_step train "no CUDA GPU visible to torch"
fi

# --- packed training: several cells per GPU ----------------------------------------------------------
# One `bench train --concurrent` process per row set (each cell is a process of its own inside it):
# uncompiled first (the issue's target compares against one uncompiled cell), compiled second (its
# own solo compiled row besides). Merged into bench_train_concurrent.json: every row of both, the
# first file's header; the dry run reads that file (echobench/reporting/training_cost.py).
if [ "$HAVE_GPU" = 1 ] && [ "$MODE" = full ]; then
    timed_step packed:plain "$T_PACKED" "$OUT/packed_plain.json" "$PY" -m echobench bench train --device cuda \
        --n "$PACKED_N" --concurrent 2 4 8 --json
    timed_step packed:compiled "$T_PACKED_COMPILE" "$OUT/packed_compiled.json" "$PY" -m echobench bench train \
        --device cuda --n "$PACKED_N" --concurrent 2 4 8 --compile --json
    IFS= read -r -d '' MERGE_PACKED <<'PY' || true
import json, sys
from pathlib import Path

out, merged = Path(sys.argv[1]), None
for name in ("packed_plain.json", "packed_compiled.json"):
    try:
        doc = json.loads((out / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        continue
    if merged is None:
        merged = {**doc, "rows": [], "files": []}
    merged["files"].append(name)
    seen = {(r["cells"], r["compile"]) for r in merged["rows"]}
    merged["rows"] += [r for r in doc["rows"] if (r["cells"], r["compile"]) not in seen]
if merged is not None:
    rows = [r for r in merged["rows"] if r.get("aggregate_images_per_s")]
    merged["best"] = max(rows, key=lambda r: r["aggregate_images_per_s"], default=None)
    merged["compile"] = any(r["compile"] for r in merged["rows"])
    (out / "bench_train_concurrent.json").write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    print(f"merged {len(merged['files'])} file(s), {len(merged['rows'])} row(s)")
PY
    "$PY" -c "$MERGE_PACKED" "$OUT" || echo "gpu_check: merging the packed-training rows failed" >&2
elif [ "$HAVE_GPU" = 1 ]; then
    skip_step packed "full mode only"
else
    skip_step packed "no CUDA GPU visible to torch"
fi

# --- (e) runtime report ------------------------------------------------------------------------------
# `bench engines --json` → the measurement schema of echobench/reporting/runtime.py, one measurement per
# row (engine or the diffusers reference) and batch size that has a rate; rows and batch sizes without
# one (unavailable engine, unsupported batch size) are listed under "skipped" with the reason. The
# keys read are documented in scripts/README.md; both layouts there are accepted.
IFS= read -r -d '' CONVERT <<'PY' || true
import json, re, sys

src, dst, gpu_name = sys.argv[1], sys.argv[2], sys.argv[3]
with open(src, encoding="utf-8") as f:
    doc = json.load(f)
NOT_RUN = ("unavailable", "unsupported", "error")


def number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def per_batch(entry):  # {"8": {...}, "16": {...}} from either layout
    if isinstance(entry.get("batch_sizes"), dict):
        return entry["batch_sizes"]
    return {k: v for k, v in entry.items() if str(k).isdigit()}


rows = dict(doc.get("rows") or doc.get("engines") or {})
if isinstance(doc.get("reference"), dict):
    rows[doc["reference"].get("name", "diffusers-pipeline")] = doc["reference"]
env_device = ((doc.get("environment") or {}).get("device") or {}).get("name")
device = doc.get("device_name") or doc.get("gpu_name") or env_device or doc.get("device")
if not device or re.fullmatch(r"cuda(:\d+)?|cpu", str(device)):
    device = gpu_name or None
if isinstance(doc.get("cfg"), bool):
    cfg = doc["cfg"]
else:  # diffusers applies classifier-free guidance when guidance_scale > 1
    cfg = doc.get("guidance_scale", 7.5) > 1
measurements, skipped = [], []
for engine, entry in rows.items():
    if not isinstance(entry, dict) or any(k in entry for k in NOT_RUN):
        why = next((entry[k] for k in NOT_RUN if k in entry), None) if isinstance(entry, dict) else repr(entry)
        skipped.append({"engine": engine, "batch_size": None, "why": why})
        continue
    for batch, r in per_batch(entry).items():
        r = r if isinstance(r, dict) else {"error": repr(r)}
        rate, spi = number(r.get("images_per_s")), number(r.get("seconds_per_image"))
        if rate is None and spi is None:
            why = next((r[k] for k in NOT_RUN if k in r), "no images_per_s")
            skipped.append({"engine": engine, "batch_size": int(batch), "why": why})
            continue
        m = {"device": device, "resolution": doc.get("resolution", 512), "batch_size": int(batch),
             "steps": doc.get("steps", 20), "cfg": cfg, "seconds_per_image": spi or 1.0 / rate, "engine": engine,
             "images_per_s": rate or 1.0 / spi, "seconds_per_step": r.get("seconds_per_step"),
             "peak_mib": r.get("peak_mib", r.get("peak_memory_mib")),
             "parity_max_abs": r.get("parity_max_abs", r.get("parity_error"))}
        measurements.append(m)
with open(dst, "w", encoding="utf-8") as f:
    json.dump({"source": src, "measurements": measurements, "skipped": skipped}, f, indent=2)
print(f"{len(measurements)} measurement(s), {len(skipped)} skipped -> {dst}")
sys.exit(0 if measurements else 1)
PY
if [ -s "$OUT/bench_engines.json" ]; then
    timed_step runtime "$T_RUNTIME" - bash -c '"$1" -c "$2" "$3" "$4" "$5" && "$1" -m echobench report --runtime "$4" --out "$6" >/dev/null' \
        _ "$PY" "$CONVERT" "$OUT/bench_engines.json" "$OUT/runtime_measurements.json" "$GPU_NAME" "$OUT"
else
    skip_step runtime "no bench engines JSON to convert"
fi

write_summary || { echo "gpu_check: writing the summary failed" >&2; exit 1; }

# Every recorded step must be ok (skipped ones count as not passed: nothing was checked).
if awk -F'\t' 'NR > 1 && $2 != "ok" { bad = 1 } END { exit bad }' "$STEPS"; then
    exit 0
fi
exit 1
