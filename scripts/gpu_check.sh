#!/usr/bin/env bash
# GPU runbook: measure napari-emseg on one GPU in under 9 minutes and write the figures to OUTDIR.
#
#   scripts/gpu_check.sh OUTDIR          # on a GPU machine (H100/H200): about 8 minutes
#   scripts/gpu_check.sh --cpu OUTDIR    # every stage tiny on the CPU (under 3 minutes): a smoke test
#                                        # (--dry-run is the same)
#
# Stages, each time-boxed with `timeout` (the whole run never exceeds GPU_CHECK_BUDGET_S, default
# 530 s; 160 s with --cpu; each stage's slot scales with it); a failed or timed-out stage is
# recorded and the next one runs. GPU slots (s): gpu_tests 70, unetr 85, mae3d_mfu 70, pretrain
# 125, live 95, devices 50 (495, plus the env's setup and 10 s for the summary):
#   env         the Python to use: $GPU_CHECK_PYTHON, else ./.venv if it imports torch (with CUDA)
#               and napari_emseg, else a new venv (./.venv, or ./.venv-gpu beside a CPU-only ./.venv;
#               --system-site-packages when the system Python has a CUDA torch, else
#               `pip install torch==2.13.0` first), then `pip install -e .[test]`
#   gpu_tests   pytest -m gpu on the test files that hold GPU tests     -> gpu_tests.log, gpu_tests.xml
#   unetr       tiled inference of the ViT-B UNETR at bf16 (bench/inference.py) on 64 x 1024 x 1024:
#               Mvoxel/s in memory (predict_tiled, array -> array) and the fraction of the GPU's dense
#               bf16 peak; then end to end zarr -> zarr as `segment --task none` (segment_job on
#               open_volume of a zarr array, float16 maps written to OUT/predictions, provenance and its
#               input checksum included; the predicting part alone too)  -> unetr.json, unetr.log
#   mae3d_mfu   MAE-3D ViT-B pretraining samples/s and model-FLOP utilisation
#               (bench/pretrain_throughput.py --mfu)                     -> mae3d_mfu.json, mae3d_mfu.log
#   pretrain    a short real run of napari-emseg-pretrain (MAE-3D ViT-B, 72 s of training) on
#               $GPU_CHECK_DATA (any volume the CLI reads) or a synthetic EM volume; the exported
#               encoder and its card are copied to OUTDIR               -> pretrain.log, *.safetensors, *.card.json
#   live        live training while painting (bench/live.py --synthetic --device cuda): a scripted
#               painter paints a whole section of a synthetic EM volume (12 x 768 x 768, its
#               mitochondria) every 9 s for 54 s while live_fine_tune trains the 2D U-Net and
#               previews the section in view; the median seconds from a stroke to the first overlay
#               of that section from a model that has trained on it (strokes after the first), and
#               training steps/s (tiny on the CPU with --cpu)        -> live.json, live.log
#   devices     `segment --devices` (all GPUs, or two workers on GPU 0 on a one-GPU machine; cpu,cpu
#               with --cpu) on a synthetic volume: the device each worker used, and the maps equal
#               a one-device run's (to float16 rounding)                 -> devices.json, devices.log
# Then summary.json and summary.md (each stage's status, seconds and headline figures).
set -uo pipefail

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }
MODE=gpu
OUT=""
for arg in "$@"; do
  case "$arg" in
    --cpu|--dry-run) MODE=cpu ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) [ -z "$OUT" ] || { echo "gpu_check.sh: one OUTDIR only" >&2; exit 2; }; OUT="$arg" ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu_check.sh: OUTDIR is required" >&2; usage >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT/stages" || exit 2
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT" || exit 2
# a carried .venv's editable install may point at another checkout's path: the source here wins
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg QT_QPA_PLATFORM=offscreen PYTHONUNBUFFERED=1
if [ "$MODE" = cpu ]; then
  DEFAULT_BUDGET=160
  export CUDA_VISIBLE_DEVICES=""   # the smoke test never touches a GPU
else
  DEFAULT_BUDGET=530
fi
BUDGET="${GPU_CHECK_BUDGET_S:-$DEFAULT_BUDGET}"  # every stage's slot scales with it (a slow CI box: more)
START=$SECONDS
PY=""
CUDA=0

log() { echo "[gpu_check $(( SECONDS - START ))s] $*" >&2; }

# record NAME STATUS RC SECONDS [NOTE]: one stage's outcome as stages/NAME.json
record() {
  printf '{"stage": "%s", "status": "%s", "rc": %s, "seconds": %s, "note": "%s"}\n' \
    "$1" "$2" "$3" "$4" "${5:-}" >"$OUT/stages/$1.json"
  log "$1: $2 (rc $3, $4 s)${5:+ - $5}"
}

# stage NAME SLOT_S CMD...: run CMD under `timeout`, at most SLOT_S and never past the budget
stage() {
  local name=$1 slot=$2
  shift 2
  local left=$(( BUDGET - (SECONDS - START) - 10 ))  # 10 s kept for the summary
  slot=$(( slot * BUDGET / DEFAULT_BUDGET ))
  [ "$slot" -lt "$left" ] || slot=$left
  if [ "$slot" -lt 5 ]; then
    record "$name" skipped 0 0 "no time left in the ${BUDGET} s budget"
    return 0
  fi
  local t0=$SECONDS rc status=ok
  log "$name: up to ${slot} s"
  timeout -k 10 "$slot" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=timeout; elif [ "$rc" -ne 0 ]; then status=failed; fi
  record "$name" "$status" "$rc" "$(( SECONDS - t0 ))" "see $name.log"
  return 0
}

# -- env ----------------------------------------------------------------------------------------
# probe PY: write env.json (versions, GPU); succeed when torch and napari_emseg import and, in GPU
# mode, CUDA is usable
probe() {
  "$1" - "$MODE" >"$OUT/env.json" 2>>"$OUT/env.log" <<'EOF'
import json, platform, subprocess, sys
info = {"python": sys.executable, "python_version": platform.python_version(), "mode": sys.argv[1]}
ok = True
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
    ok = torch.cuda.is_available() or sys.argv[1] == "cpu"
except Exception as err:  # recorded: the summary says what is missing
    info["torch_error"], ok = repr(err), False
try:
    import napari_emseg
    info["napari_emseg"] = napari_emseg.__version__
except Exception as err:
    info["napari_emseg_error"], ok = repr(err), False
try:
    info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    pass
print(json.dumps(info, indent=2))
sys.exit(0 if ok else 3)
EOF
}
has_cuda_torch() { "$1" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)" >/dev/null 2>&1; }

pip_install_project() {  # VENV_PY: the package and its test extras; offline, whatever is already there
  "$1" -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" \
    || "$1" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3
}

setup_env() {
  if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY="$GPU_CHECK_PYTHON"; echo "python from GPU_CHECK_PYTHON: $PY"; probe "$PY"; return
  fi
  if [ -x .venv/bin/python ] && probe .venv/bin/python; then
    PY=.venv/bin/python; echo "using ./.venv"; return 0
  fi
  local sys_py="${PYTHON:-python3}" venv=.venv
  # a ./.venv without a CUDA torch (e.g. carried from a CPU machine) stays as it is: ./.venv-gpu
  [ "$MODE" = gpu ] && [ -x .venv/bin/python ] && venv=.venv-gpu
  if [ "$MODE" = gpu ] && has_cuda_torch "$sys_py"; then
    # the machine's CUDA torch, seen from a venv
    [ -x "$venv/bin/python" ] || "$sys_py" -m venv --system-site-packages "$venv"
    echo "venv $venv over the system's CUDA torch"
  else
    [ -x "$venv/bin/python" ] || "$sys_py" -m venv "$venv"
    if ! has_cuda_torch "$venv/bin/python" && { [ "$MODE" = gpu ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; }; then
      echo "installing ${TORCH_SPEC:-torch==2.13.0} into $venv"
      "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | tail -1
      "$venv/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | tail -3
    fi
  fi
  pip_install_project "$venv/bin/python"
  PY="$venv/bin/python"
  probe "$PY"
}

t0=$SECONDS
setup_env >>"$OUT/env.log" 2>&1
rc=$?
[ -n "$PY" ] || PY=python3
grep -q '"cuda_available": true' "$OUT/env.json" 2>/dev/null && CUDA=1
if [ "$rc" -eq 0 ]; then env_status=ok; else env_status=failed; fi
note="python $PY"
[ "$MODE" = gpu ] && [ "$CUDA" -eq 0 ] && note="no usable CUDA device: GPU stages skipped"
record env "$env_status" "$rc" "$(( SECONDS - t0 ))" "$note"

gpu_ok() {  # GPU mode without CUDA: the stage is recorded as skipped
  if [ "$MODE" = gpu ] && [ "$CUDA" -eq 0 ]; then record "$1" skipped 0 0 "no CUDA device"; return 1; fi
}

# -- stages -------------------------------------------------------------------------------------
mapfile -t GPU_TESTS < <(grep -rl "pytest.mark.gpu" tests --include="test_*.py" | sort)
stage gpu_tests "$([ "$MODE" = cpu ] && echo 40 || echo 70)" \
  "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml "$OUT/gpu_tests.xml" "${GPU_TESTS[@]}"

if [ "$MODE" = cpu ]; then
  UNETR_ARGS=(--unetr-device cpu --unetr-vit micro --unetr-shape 8,64,64 --unetr-tile 4,32,32 --gpu-batch 2 --threads 2)
  MFU_ARGS=(--device cpu --mfu-vit micro --mfu-batch 2 --mfu-patch 4,32,32 --steps 2 --threads 2)
  PRE_ARGS=(--set model.encoder.vit_size=micro --set data.patch=4,32,32 --set data.batch_size=2 --max-steps 2
            --set model.decoder_width=64 --set model.decoder_heads=4 --set model.decoder_depth=1)
  SYNTH=16,96,96
else
  UNETR_ARGS=(--unetr-device cuda --unetr-vit base --gpu-batch "${GPU_CHECK_UNETR_BATCH:-8}")
  MFU_ARGS=(--device cuda --mfu-vit base --mfu-batch "${GPU_CHECK_MFU_BATCH:-128}" --steps 10)
  PRE_ARGS=(--set data.batch_size="${GPU_CHECK_PRETRAIN_BATCH:-64}" --set data.workers=8 --time-limit 1.2)
  SYNTH=32,256,256
fi
if [ "$MODE" = cpu ]; then
  LIVE_ARGS=(--device cpu --shape 8,128,128 --minutes 0.4 --every 6 --slices 3)
else
  LIVE_ARGS=(--device cuda --shape 12,768,768 --minutes 0.9 --every 9 --slices 6)
fi

gpu_ok unetr && stage unetr "$([ "$MODE" = cpu ] && echo 45 || echo 85)" \
  "$PY" bench/inference.py --skip-compare "${UNETR_ARGS[@]}" --json "$OUT/unetr.json"

gpu_ok mae3d_mfu && stage mae3d_mfu "$([ "$MODE" = cpu ] && echo 45 || echo 70)" \
  "$PY" bench/pretrain_throughput.py --mfu "${MFU_ARGS[@]}" --json "$OUT/mae3d_mfu.json"

pretrain_run() {  # ARGS...: a short real pretraining run; the encoder and its card land in OUTDIR
  set -e
  local run data="${GPU_CHECK_DATA:-}"
  run="$(mktemp -d "${TMPDIR:-/tmp}/emseg-gpu-check.XXXXXX")"
  trap 'rm -rf "$run"' EXIT
  if [ -z "$data" ]; then
    data="$run/synthetic_em.npy"
    "$PY" -c "import sys, numpy as np; from napari_emseg.data.synthetic import make_synthetic_em; \
np.save(sys.argv[1], make_synthetic_em(tuple(int(v) for v in sys.argv[2].split(',')), seed=0).raw)" "$data" "$SYNTH"
  fi
  local name="mae3d-vitb-gpu-check"
  [ "$MODE" = cpu ] && name="mae3d-vitmicro-cpu-check"
  "$PY" -m napari_emseg.cli.pretrain --method mae3d --data "$data" --out "$run/run" --name "$name" \
    --set train.checkpoint_every=0 --set train.tensorboard=false --set train.preview_every=0 \
    --card "hardware=$(cat "$OUT/env.json" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d.get("gpu") or "CPU")')" \
    --card "description=gpu_check.sh $MODE pretraining run (a check, not a model to use)" -q "$@"
  cp "$run/run/$name.safetensors" "$OUT/"
  # the card, from the safetensors header's metadata (no torch import: a second or two)
  "$PY" - "$OUT/$name.safetensors" "$OUT/$name.card.json" <<'PYEOF'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    meta = json.loads(f.read(struct.unpack("<Q", f.read(8))[0])).get("__metadata__", {})
with open(sys.argv[2], "w") as f:
    json.dump(json.loads(meta.get("card") or "{}"), f, indent=2)
PYEOF
}
export -f pretrain_run
export PY OUT MODE SYNTH
gpu_ok pretrain && stage pretrain "$([ "$MODE" = cpu ] && echo 60 || echo 125)" bash -c 'pretrain_run "$@"' pretrain "${PRE_ARGS[@]}"

# live painting on a synthetic volume (the GPU machine has no ../shared/data): stroke -> overlay, steps/s
gpu_ok live && stage live "$([ "$MODE" = cpu ] && echo 45 || echo 95)" \
  "$PY" bench/live.py --synthetic "${LIVE_ARGS[@]}" --json "$OUT/live.json"

devices_run() {  # segment --devices vs one device on the same synthetic volume -> devices.json
  set -e
  local run devs one shape blocks n
  run="$(mktemp -d "${TMPDIR:-/tmp}/emseg-gpu-check.XXXXXX")"
  trap 'rm -rf "$run"' EXIT
  if [ "$MODE" = cpu ]; then
    devs=cpu,cpu; one=cpu; shape=16,128,128; blocks=8,64,64
  else
    n="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
    if [ "$n" -ge 2 ]; then devs=all; else devs=0,0; fi
    one=cuda:0; shape=32,256,256; blocks=16,128,128
  fi
  local model
  model="$("$PY" -c 'from napari_emseg.presets import preset_model_path; print(preset_model_path("mitochondria"))')"
  "$PY" -m napari_emseg.cli.main -q sample --out "$run/s.zarr" --shape "$shape"
  local common=(segment --image "$run/s.zarr:raw" --model "$model" --task none --no-voxel-match)
  local t0=$SECONDS
  "$PY" -m napari_emseg.cli.main -q "${common[@]}" --out "$run/one.zarr" --device "$one" --block "$blocks"
  local t1=$SECONDS
  "$PY" -m napari_emseg.cli.main -q "${common[@]}" --out "$run/many.zarr" --devices "$devs" --blocks "$blocks"
  local t2=$SECONDS
  "$PY" - "$run" "$OUT/devices.json" "$devs" "$MODE" "$(( t1 - t0 ))" "$(( t2 - t1 ))" <<'PYEOF'
import json, sys
import numpy as np, zarr
run, out, devs, mode, s_one, s_many = sys.argv[1:]
one = zarr.open_array(f"{run}/one.zarr/predictions", mode="r")
many = zarr.open_array(f"{run}/many.zarr/predictions", mode="r")
diff = float(np.abs(one[:].astype(np.float32) - many[:].astype(np.float32)).max())
inf = dict(many.attrs)["inference"]
# float16 maps: worker processes use other thread counts than the one-device run, so a value may
# round to the neighbouring float16 (1e-4 near 0.2); GPUs may also pick other kernels
ok = diff <= (1e-3 if mode == "cpu" else 1e-2) and bool(inf.get("workers"))
json.dump({"devices": devs, "resolved": inf.get("devices"), "workers": inf.get("workers"), "max_abs_diff": diff,
           "ok": ok, "seconds_one_device": int(s_one), "seconds_devices": int(s_many)}, open(out, "w"), indent=2)
print(json.dumps(json.load(open(out))))
sys.exit(0 if ok else 1)
PYEOF
}
export -f devices_run
gpu_ok devices && stage devices "$([ "$MODE" = cpu ] && echo 45 || echo 50)" bash -c 'devices_run' devices

# -- summary ------------------------------------------------------------------------------------
SUMMARY_PY="$PY"
"$SUMMARY_PY" -c "import json" 2>/dev/null || SUMMARY_PY=python3
"$SUMMARY_PY" - "$OUT" "$MODE" "$(( SECONDS - START ))" <<'EOF'
import glob, json, os, sys
import xml.etree.ElementTree as ET

out, mode, total = sys.argv[1], sys.argv[2], int(sys.argv[3])

def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

order = ["env", "gpu_tests", "unetr", "mae3d_mfu", "pretrain", "live", "devices"]
stages = {}
for name in order:
    s = load(os.path.join("stages", f"{name}.json"))
    if s:
        stages[name] = s
tests = None
try:
    root = ET.parse(os.path.join(out, "gpu_tests.xml")).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
except (OSError, ET.ParseError, AttributeError):
    pass
unetr = (load("unetr.json") or {}).get("unetr")
mfu = (load("mae3d_mfu.json") or {}).get("mae3d")
devices = load("devices.json")
live = load("live.json")
if live:  # the headline figures; live.json holds every stroke and preview
    live = {**{k: live.get(k) for k in ("device", "device_name", "data", "minutes", "every", "slices", "steps",
                                     "steps_per_s", "median_overlay_s", "previews", "preview_side", "refresh_s",
                                     "preview_cost_s", "pixel_ap", "iou", "ap50")},
            "overlay_s": [x["overlay_s"] for x in live.get("latencies", [])]}
cards = sorted(glob.glob(os.path.join(out, "*.card.json")))
card = load(os.path.basename(cards[0])) if cards else None
summary = {
    "mode": mode, "total_seconds": total, "env": load("env.json"), "stages": stages, "gpu_tests": tests,
    "unetr_inference": unetr, "mae3d_pretraining": mfu,
    "pretrain_run": None if card is None else {
        "encoder": os.path.basename(cards[0]).replace(".card.json", ".safetensors"),
        "steps": card.get("steps"), "final_loss": card.get("final_loss"), "wall_time_s": card.get("wall_time_s"),
        "hardware": card.get("hardware")},
    "live": live,
    "devices": devices,
    "all_ok": bool(stages) and all(s["status"] == "ok" for s in stages.values()),
}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)

def fmt(v, spec="{:.4g}"):
    return "n/a" if v is None else spec.format(v)

lines = [f"# gpu_check.sh ({mode} mode): {total} s", "", "| stage | status | seconds |", "|---|---|---|"]
lines += [f"| {n} | {s['status']} | {s['seconds']} |" for n, s in stages.items()]
lines.append("")
if tests:
    lines.append(f"- GPU tests: {tests['tests']} run, {tests['failures']} failed, {tests['errors']} errors, "
                 f"{tests['skipped']} skipped")
if unetr:
    lines.append(f"- {unetr['model']} inference ({unetr['precision']}, {unetr['device']}): "
                 f"{fmt(unetr['mvoxel_per_s'])} Mvoxel/s, {fmt(unetr['achieved_tflops'])} TFLOP/s = "
                 f"{fmt(unetr['fraction_of_peak'], '{:.1%}')} of the bf16 peak (in memory)")
    z = unetr.get("zarr")
    if z:
        lines.append(f"- {unetr['model']} zarr -> zarr end to end (segment --task none): "
                     f"{fmt(z['mvoxel_per_s'])} Mvoxel/s ({z['seconds']} s; predicting alone "
                     f"{fmt(z['predict_mvoxel_per_s'])} Mvoxel/s)")
if mfu:
    lines.append(f"- {mfu['model']} pretraining ({mfu['precision']}, batch {mfu['batch']}): "
                 f"{fmt(mfu['samples_per_s'])} samples/s, {fmt(mfu['achieved_tflops'])} TFLOP/s, "
                 f"MFU {fmt(mfu['mfu'], '{:.1%}')}")
if summary["pretrain_run"]:
    r = summary["pretrain_run"]
    lines.append(f"- pretraining run: {r['encoder']}, {r['steps']} steps in {r['wall_time_s']} s, "
                 f"final loss {fmt(r['final_loss'], '{:.4f}')}")
if live:
    lines.append(f"- live painting ({live['device_name']}, {live['data']}): stroke -> overlay median "
                 f"{fmt(live['median_overlay_s'], '{:.2f} s')} (strokes after the first: {live['overlay_s'][1:]}), "
                 f"{fmt(live['steps_per_s'], '{:.3g}')} steps/s ({live['steps']} steps in {live['minutes']} min), "
                 f"preview {live['preview_side']} px every {live['refresh_s']} s")
if devices:
    lines.append(f"- segment --devices {devices['devices']}: workers {devices['workers']}, maps vs one device: "
                 f"max |diff| {devices['max_abs_diff']:.3g} ({devices['seconds_devices']} s vs "
                 f"{devices['seconds_one_device']} s)")
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "done: $OUT/summary.json"
exit 0
