#!/usr/bin/env bash
# The GPU check of kdbench, in one run of under 5 minutes on a machine with one GPU.
#
#   bash benchmarks/device_check.sh [--cpu-tiny] [OUT_DIR]
#
# For a Python (3.12, torch, timm, pandas, scipy, pytest) without submitit and without network:
#   1. installs kdbench without dependencies (pip install --no-deps --no-build-isolation -e .;
#      if that fails, the checkout is used through PYTHONPATH; with --cpu-tiny only a dry run),
#      and checks that the modules the
#      CUDA tests and the benchmark import load without the missing dependencies;
#   2. runs the CUDA tests (every test file marked `cuda`, `pytest -m cuda`);
#   3. runs benchmarks/gpu_step.py with the time that is left (its --budget-s; configurations
#      it has no time for are listed as skipped).
# Writes to OUT_DIR (default: $OUT, else ./device_check_out): device_check.log (everything
# printed), device_check.json (rewritten after each part), cuda_tests.xml and gpu_step.json;
# prints a summary at the end.
# --cpu-tiny: the same steps on the CPU with tiny models (the CUDA tests skip): a check of the
# script itself, in a few minutes. $DEVICE_CHECK_LIMIT_S overrides the time limit (285 s; 900 s
# with --cpu-tiny).
set -uo pipefail

TINY=0
if [[ "${1:-}" == "--cpu-tiny" ]]; then TINY=1; shift; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-${OUT:-$ROOT/device_check_out}}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
cd "$ROOT" || exit 1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# the whole check: under 5 minutes on the GPU; the tiny CPU check has longer on a loaded machine
LIMIT_S=${DEVICE_CHECK_LIMIT_S:-$(( TINY ? 900 : 285 ))}
START=$(date +%s)
exec > >(tee -a "$DIR/device_check.log") 2>&1

elapsed() { echo $(( $(date +%s) - START )); }

part() {  # part NAME RC: record one part's exit status and time in device_check.json
    python - "$DIR/device_check.json" "$1" "$2" "$(elapsed)" <<'EOF'
import json, sys
from pathlib import Path
path, name, rc, at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
state = json.loads(path.read_text()) if path.exists() else {}
state[name] = {"rc": rc, "ok": rc == 0, "at_s": at}
path.with_suffix(".tmp").write_text(json.dumps(state, indent=1))
path.with_suffix(".tmp").replace(path)
EOF
}

echo "== device check $(date -u +%FT%TZ) in $ROOT -> $DIR (tiny: $TINY)"
rm -f "$DIR/device_check.json"
python - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, "
      f"cuda {torch.cuda.is_available()}, devices {torch.cuda.device_count()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
EOF
part environment $?

echo "== 1. install (no dependencies) and imports"
INSTALL=(pip install --no-deps --no-build-isolation -q -e .)
if (( TINY )); then INSTALL+=(--dry-run); fi  # leave a development machine's install alone
"${INSTALL[@]}" || echo "pip install failed: the checkout is used through PYTHONPATH"
python - <<'EOF'
import importlib, sys
for name in ("kdbench.train.run", "kdbench.train.gpu", "kdbench.train.cost",
             "kdbench.data.cityscapes", "methods.cirkd"):
    importlib.import_module(name)
absent = [m for m in ("submitit",) if m in sys.modules]
print("imports ok; loaded without:", ", ".join(m for m in ("submitit",) if m not in absent))
sys.exit(1 if absent else 0)
EOF
part imports $?

echo "== 2. CUDA tests (pytest -m cuda), at $(elapsed) s"
mapfile -t FILES < <(grep -rl --include='test_*.py' 'pytest.mark.cuda' tests)
if (( ${#FILES[@]} )); then
    timeout $(( TINY ? 400 : 150 )) python -m pytest -q -m cuda -p no:cacheprovider "${FILES[@]}" \
        --junitxml="$DIR/cuda_tests.xml"
    part cuda_tests $?
else
    echo "no test file marked cuda"; part cuda_tests 1
fi

echo "== 3. benchmarks/gpu_step.py, at $(elapsed) s"
LEFT=$(( LIMIT_S - $(elapsed) ))
if (( TINY )); then
    STEP_ARGS=(--device cpu --tiny --compile-backend eager --methods none kd cirkd lix)
else
    STEP_ARGS=(--device cuda)
fi
timeout $(( LEFT > 30 ? LEFT : 30 )) python benchmarks/gpu_step.py "${STEP_ARGS[@]}" \
    --budget-s $(( LEFT > 90 ? LEFT - 60 : 30 )) --json "$DIR/gpu_step.json"
part gpu_step $?

echo "== summary, after $(elapsed) s"
python - "$DIR" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path
out = Path(sys.argv[1])
parts = json.loads((out / "device_check.json").read_text())
print("parts:", ", ".join(f"{k} {'ok' if v['ok'] else 'FAILED rc=' + str(v['rc'])}"
                          for k, v in parts.items()))
if (out / "cuda_tests.xml").exists():
    suite = ET.parse(out / "cuda_tests.xml").getroot().find("testsuite")
    print("cuda tests: " + ", ".join(f"{k} {suite.get(k)}"
                                     for k in ("tests", "failures", "errors", "skipped")))
if (out / "gpu_step.json").exists():
    result = json.loads((out / "gpu_step.json").read_text())
    print(f"gpu_step on {result['env']['gpu'] or result['env']['device']}: "
          f"{len(result['configs'])} configurations, skipped {len(result['skipped'])}")
    for c in result["configs"]:
        h = c["harness"]
        print(f"  {c['name']:24s} harness/bare {c['harness_over_bare']:.3f}  "
              f"{h['images_s']:8.1f} img/s  {h['tflops']:7.2f} TFLOP/s  "
              f"peak {h['peak_memory_mb'] or 0:8.0f} MB")
    for key, value in result["summary"].items():
        if key != "harness_over_bare":
            print(f"  {key}: {value}")
EOF
