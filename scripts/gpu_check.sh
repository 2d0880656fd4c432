#!/usr/bin/env bash
# One pass of echobench's GPU checks on a single GPU, in at most 8 minutes, with no network access.
#
# Steps, each under `timeout` (limits in seconds below, overridable through the environment), each
# recorded with its exit status and wall time whatever happened to the ones before it:
#   setup    pick a Python (see scripts/README.md), install what is missing from the wheels beside this
#            script (pip --no-index: never the network), `pip install -e . --no-deps`
#   gpu      which GPU torch sees (reports/gpu/gpu.json); without one the GPU steps are skipped
#   tests    the tests marked `gpu` (the engines' parity tests), junit XML in reports/gpu/
#   engines  `echobench bench engines --config sd15 --random-init ...` (reports/gpu/bench_engines.json)
#   train    `echobench bench train --device cuda --json` (reports/gpu/bench_train.json)
#   runtime  bench_engines.json converted to the runtime report's measurements, then
#            `echobench report --runtime ... --out reports/gpu` (runtime.md, runtime.json)
#   summary  reports/gpu/summary.{json,md}: date, GPU, every step's status and time, the numbers
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

# Limits sum to 458 s plus 3 s of grace after each TERM (479 s), so the whole run stays under 8
# minutes even if every step runs into its limit. The engines benchmark gets most of it: inductor
# compiles SD 1.5's fused step once per batch size. It writes its JSON after every row, so a step cut
# short by its limit still leaves the rows it measured.
T_SETUP="${T_SETUP:-40}"
T_GPU="${T_GPU:-15}"
T_TESTS="${T_TESTS:-80}"
T_ENGINES="${T_ENGINES:-270}"
T_TRAIN="${T_TRAIN:-35}"
T_RUNTIME="${T_RUNTIME:-10}"
T_SUMMARY="${T_SUMMARY:-8}"
KILL_AFTER=3

# A previous run's results must not pass for this one's (a skipped step would leave them in place).
rm -f "$OUT"/{gpu.json,pytest_gpu.xml,bench_engines.json,bench_train.json,runtime_measurements.json} \
    "$OUT"/{runtime.md,runtime.json,summary.md,summary.json} "$OUT"/logs/*.log "$OUT"/logs/python.txt
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

# --- (a) setup -------------------------------------------------------------------------------------
# module:distribution pairs. Required: echobench's own dependencies (an editable --no-deps install
# does not bring them), the SD 1.5 + ControlNet stack and pytest. Optional: the engines that
# `bench engines` reports as unavailable when they are missing. "a|b": the first of these that has a
# wheel; CU is torch's CUDA major version (TensorRT's wheels are per CUDA major: tensorrt-cu12, -cu13).
export REQUIRED="numpy:numpy yaml:pyyaml tabulate:tabulate tqdm:tqdm cv2:opencv-python-headless
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

run_step setup "$T_SETUP" - bash -c setup_env
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
if run_step gpu "$T_GPU" "$OUT/gpu.json" "$PY" -c "$GPU_PROBE"; then
    HAVE_GPU=1
    GPU_NAME=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$OUT/gpu.json" 2>/dev/null)
else
    HAVE_GPU=0
    GPU_NAME=""
fi

# --- (b) tests marked gpu ----------------------------------------------------------------------------
if [ "$HAVE_GPU" = 1 ]; then
    # pytest exits 5 when no test is collected: then nothing was checked, and the step fails.
    STEP_NOTE="pytest -m gpu; exit 5 means no test marked gpu was collected"
    run_step tests "$T_TESTS" - "$PY" -m pytest -o addopts= -m gpu -q -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml" tests
else
    skip_step tests "no CUDA GPU visible to torch"
fi

# --- (c) EchoMod engines -----------------------------------------------------------------------------
if [ "$HAVE_GPU" = 1 ]; then
    # The engines that may be unavailable first (they answer at once), compile last (the longest build).
    # The fused attention projections (fuse_qkv) are untimed on a GPU so far: their rows come after
    # the defaults', so a step cut short by its limit loses them first.
    run_step engines "$T_ENGINES" - "$PY" -m echobench bench engines --config sd15 --random-init --resolution 512 \
        --batch-sizes 8 16 --steps 20 --engines onnxruntime tensorrt eager "eager[fuse_qkv=true]" compile \
        "compile[fuse_qkv=true]" --out "$OUT/bench_engines.json"
else
    skip_step engines "no CUDA GPU visible to torch"
fi

# --- (d) one training epoch --------------------------------------------------------------------------
if [ "$HAVE_GPU" = 1 ]; then
    run_step train "$T_TRAIN" "$OUT/bench_train.json" "$PY" -m echobench bench train --device cuda --json
else
    skip_step train "no CUDA GPU visible to torch"
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
    run_step runtime "$T_RUNTIME" - bash -c '"$1" -c "$2" "$3" "$4" "$5" && "$1" -m echobench report --runtime "$4" --out "$6" >/dev/null' \
        _ "$PY" "$CONVERT" "$OUT/bench_engines.json" "$OUT/runtime_measurements.json" "$GPU_NAME" "$OUT"
else
    skip_step runtime "no bench engines JSON to convert"
fi

# --- (f) summary -------------------------------------------------------------------------------------
IFS= read -r -d '' SUMMARY <<'PY' || true
import csv, json, subprocess, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, run_date, total = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])


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
doc = {"date": run_date, "gpu": gpu, "git": git, "python": sys.version.split()[0], "total_seconds": round(total, 1),
       "ok": ok, "steps": steps, "tests": tests, "test_cases": cases, "bench_train": train, "bench_engines": engines}
(out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

where = (f"{gpu['name']} ({gpu.get('memory_gib')} GiB, compute capability {gpu.get('capability')}, driver "
         f"{gpu.get('driver')})" if gpu.get("name") else "none visible to torch")
md = [f"# GPU check, {run_date}", "",
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
TOTAL=$(awk -v a="$RUN_STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
timeout --kill-after="$KILL_AFTER" "$T_SUMMARY" "$PY" -c "$SUMMARY" "$OUT" "$RUN_DATE" "$TOTAL" ||
    { echo "gpu_check: writing the summary failed" >&2; exit 1; }

# Every recorded step must be ok (skipped ones count as not passed: nothing was checked).
if awk -F'\t' 'NR > 1 && $2 != "ok" { bad = 1 } END { exit bad }' "$STEPS"; then
    exit 0
fi
exit 1
