#!/usr/bin/env bash
# The GPU check, one prepared script: CUDA tests and GPU benchmarks on a host with a CUDA device.
#
#   benchmarks/gpu/run.sh [OUTDIR] [--parts flowtests,tests,flow,flowacc,decode,stage1,stage2,gpudecode,gpudecodetests]
#                         [--dry-run]
#
# OUTDIR defaults to $OUT (set on the device tool's host) or ./gpu-results. Writes OUTDIR/run.log
# (everything printed) and OUTDIR/results.json (each part's status, seconds and numbers).
# Wheels: every .whl under .whl-gpu/, .whl-ocv/ (made by `make gpu-wheels`) and .whl-nvdec/ (PyNvVideoCodec,
# `make gpu-nvdec-wheel`) is installed into a private target first, for hosts that lack
# zarr/numcodecs/av (or opencv-contrib for the OpenCV baseline, PyNvVideoCodec for NVDEC). Inputs: .gpu-inputs/ (made by `make gpu-inputs`: the shared clips and TV-L1 pairs).
# A part whose packages are missing is skipped with the reason, so the carried wheel set decides
# what runs (the device tool sends at most 64 MiB a call: av + zarr and opencv-contrib do not fit
# together; see benchmarks/README.md, "GPU (H200)").
# --dry-run: every part on the CPU at tiny sizes (CUDA tests run their bodies on the CPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUTDIR="${OUT:-$ROOT/gpu-results}"
PARTS="flowtests,tests,flow,flowacc,decode,stage1,stage2,gpudecode,gpudecodetests"
DRY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --parts) PARTS="$2"; shift 2 ;;
    --dry-run) DRY="--dry-run"; shift ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) OUTDIR="$1"; shift ;;
  esac
done
mkdir -p "$OUTDIR"
LOG="$OUTDIR/run.log"
: >"$LOG"
say() { echo "$@" | tee -a "$LOG"; }

PY=${PYTHON:-python3}
SITE=/tmp/stpipe-gpu-site
wheels=$(ls .whl-gpu/*.whl .whl-ocv/*.whl .whl-nvdec/*.whl 2>/dev/null || true)
if [ -n "$wheels" ] && [ -z "$DRY" ]; then  # a dry run uses this machine's environment (PYTHON=.venv/bin/python)
  # shellcheck disable=SC2086
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $wheels \
    >>"$LOG" 2>&1 || { say "run.sh: installing the carried wheels failed (see $LOG)"; exit 1; }
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
export PYTHONPATH="$ROOT:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
export STPIPE_ASSETS="${STPIPE_ASSETS:-$ROOT/.gpu-inputs}"
[ -n "$DRY" ] && export STPIPE_TEST_DEVICE=cpu

say "== $(date -u +%FT%TZ) stpipe GPU check, parts: $PARTS ${DRY}"
(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi") | tee -a "$LOG"
$PY - <<'EOF' 2>&1 | tee -a "$LOG"
import os, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}, cores {os.cpu_count()}")
for m in ("triton", "zarr", "numcodecs", "av", "cv2", "ray", "dask", "PyNvVideoCodec"):
    try:
        mod = __import__(m)
        extra = " (optflow)" if m == "cv2" and hasattr(mod, "optflow") else ""
        print(f"  {m} {getattr(mod, '__version__', '?')}{extra}")
    except Exception as exc:
        print(f"  {m}: missing ({type(exc).__name__})")
EOF

has() { $PY -c "import $1" >/dev/null 2>&1; }
status_json="$OUTDIR/parts.jsonl"
: >"$status_json"
part() {  # part NAME LIMIT_S NEEDS COMMAND...
  local name=$1 limit=$2 needs=$3; shift 3
  case ",$PARTS," in *",$name,"*) ;; *) return ;; esac
  for mod in ${needs//,/ }; do
    if ! has "$mod"; then
      say "-- $name: skipped, needs python package '$mod' (carry its wheel)"
      echo "{\"part\": \"$name\", \"status\": \"skipped\", \"why\": \"missing $mod\"}" >>"$status_json"
      return
    fi
  done
  say "-- $name: $*"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  say "-- $name: exit $rc after $((SECONDS - t0)) s"
  echo "{\"part\": \"$name\", \"status\": $rc, \"seconds\": $((SECONDS - t0))}" >>"$status_json"
}

part flowtests 240 triton $PY -m pytest -q -p no:cacheprovider -m cuda -o addopts="" -rs tests/test_flow_cuda.py
part tests 240 zarr,av $PY -m pytest -q -p no:cacheprovider -m cuda -o addopts="" -rs tests/test_cuda.py
flow_inputs=()
[ -f .gpu-inputs/pairs.npz ] && flow_inputs=(--inputs .gpu-inputs/pairs.npz)
part flow 300 triton $PY benchmarks/gpu/bench_flow_gpu.py --out "$OUTDIR" "${flow_inputs[@]}" $DRY
part flowacc 180 triton,av $PY benchmarks/gpu/bench_flow_gpu.py --out "$OUTDIR" --sections accuracy $DRY
# issue 19: the decode path on all the host's cores (per core vs bare PyAV; e2e with a null backbone
# vs all-core decode, decoder processes vs threads); stage1 below then measures e2e vs
# min(forward, all-core decode) with the extractor's decoder processes
part decode 240 zarr,av $PY benchmarks/bench_decode.py --sections percore,e2e --repeats 2 $DRY
part stage1 240 zarr,av $PY benchmarks/gpu/bench_stage_one.py --out "$OUTDIR" --clips "$STPIPE_ASSETS/videos" $DRY
part stage2 180 zarr $PY benchmarks/gpu/bench_stage_two.py --out "$OUTDIR" $DRY
# issue 19, GPU decoding: nvJPEG (JPEG folders made from the clips) and NVDEC (PyNvVideoCodec, when
# .whl-nvdec is carried) frames/s beside CPU decoding on all cores, same inputs; then features of
# GPU-decoded vs CPU-decoded stores (CUDA tests; the NVDEC one skips without PyNvVideoCodec)
part gpudecode 300 av $PY benchmarks/gpu/bench_gpu_decode.py --out "$OUTDIR" --clips "$STPIPE_ASSETS/videos" $DRY
part gpudecodetests 240 zarr,av $PY -m pytest -q -p no:cacheprovider -m cuda -o addopts="" -rs tests/test_gpu_decoding.py

$PY - "$OUTDIR" <<'EOF' 2>&1 | tee -a "$LOG"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
parts = [json.loads(line) for line in (out / "parts.jsonl").read_text().splitlines() if line.strip()]
results = {"parts": parts}
for f in sorted(out.glob("*.json")):
    if f.name != "results.json":
        results[f.stem] = json.loads(f.read_text())
(out / "results.json").write_text(json.dumps(results, indent=1))
print("results.json:", ", ".join(f"{p['part']}={p['status']}" for p in parts))
EOF
