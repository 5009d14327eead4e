#!/usr/bin/env bash
# comfyui-gpu-e2e.sh: kiln with the kiln_comfy worker on a real GPU, end to
# end. NOT YET RUN ON A GPU (docs/COMFYUI_ADAPTER.md, "The GPU run").
#
#   COMFYUI_DIR=/path/to/ComfyUI PYTHON=python3 scripts/comfyui-gpu-e2e.sh
#
# What it does, each step recorded in $OUT/result.json (OUT defaults to a
# temporary folder; the device tool's $OUT brings it back):
#   1. preflight: nvidia-smi, torch.cuda, the Python modules ComfyUI's core
#      needs, the ComfyUI tree, bin/kiln;
#   2. a random-weight SD1.5 checkpoint built on the device with ComfyUI's
#      own model classes (scripts/comfyui_random_checkpoint.py);
#   3. bin/kiln serve with configs/comfyui-gpu.yaml (its paths replaced by
#      --set), ready when /object_info lists ComfyUI's nodes (the worker's
#      hello);
#   4. two txt2img prompts (512x512, 20 steps) through kiln's /prompt, each
#      until /history says completed, the PNGs checked;
#   5. the ledger against NVML: /v1/devices (reserved, usable) beside
#      nvidia-smi's memory.used, after the runs;
#   6. from the worker's log: how often ComfyUI loaded the UNet ("Requested
#      to load"), which must be once (the warm load) for both prompts.
#
# ComfyUI's source is not part of kiln: extract a checkout into .comfyui/
# (git-excluded) and carry it, never commit it. The device image has torch;
# what ComfyUI's core imports beyond it must travel as wheels
# (docs/COMFYUI_ADAPTER.md lists them; step 1 names the first one missing).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
COMFYUI_DIR=$(cd "${COMFYUI_DIR:-$ROOT/.comfyui}" 2>/dev/null && pwd) || { echo "COMFYUI_DIR not found"; exit 2; }
PY=$(command -v "${PYTHON:-python3}")
OUT=${OUT:-$(mktemp -d)}
PORT=${PORT:-18188}
WORK=$(mktemp -d /tmp/kiln-comfy-e2e.XXXXXX)
URL=http://127.0.0.1:$PORT
mkdir -p "$OUT"
RESULTS="$OUT/steps.tsv"
: >"$RESULTS"
KILN_PID=

log() { echo "[e2e $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/e2e.log"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$RESULTS"; log "$1: $2 ${3:-}"; }
finish() {
  local code=$?
  if [ -n "$KILN_PID" ]; then kill "$KILN_PID" 2>/dev/null; wait "$KILN_PID" 2>/dev/null; fi
  cp -f "$WORK/kiln.log" "$OUT/kiln.log" 2>/dev/null
  "$PY" - "$RESULTS" "$OUT/result.json" <<'EOF'
import json, sys
steps = [dict(zip(("step", "status", "detail"), l.rstrip("\n").split("\t", 2))) for l in open(sys.argv[1]) if l.strip()]
json.dump({"ran_on_gpu": any(s["step"] == "preflight" and s["status"] == "ok" for s in steps), "steps": steps},
          open(sys.argv[2], "w"), indent=1)
EOF
  log "results in $OUT/result.json (exit $code)"
}
trap finish EXIT
fail() { record "$1" failed "$2"; exit 1; }

# 1. preflight
nvidia-smi -L >"$OUT/nvidia-smi-L.txt" 2>&1 || fail preflight "nvidia-smi: no GPU"
"$PY" - <<'EOF' >"$OUT/preflight.txt" 2>&1 || fail preflight "python modules: $(tail -1 "$OUT/preflight.txt")"
import importlib, torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
missing = [m for m in ("msgpack", "torchsde", "einops", "transformers", "safetensors", "aiohttp", "psutil",
                       "yaml", "PIL", "scipy", "tqdm", "numpy") if importlib.util.find_spec(m) is None]
assert not missing, "missing: %s" % missing
print("torch", torch.__version__, torch.cuda.get_device_name(0))
EOF
[ -f "$COMFYUI_DIR/comfy/model_management.py" ] || fail preflight "$COMFYUI_DIR is not a ComfyUI tree"
(cd "$COMFYUI_DIR" && "$PY" -c 'import sys; sys.path.insert(0, "."); import nodes, execution, folder_paths' \
  >"$OUT/import-comfyui.txt" 2>&1) || fail preflight "import ComfyUI: $(tail -1 "$OUT/import-comfyui.txt")"
[ -x bin/kiln ] || fail preflight "bin/kiln missing: make build, and carry bin/"
record preflight ok "$(tail -1 "$OUT/preflight.txt"); ComfyUI $(cd "$COMFYUI_DIR" && git rev-parse --short HEAD 2>/dev/null || echo '(no git)')"

# 2. checkpoint
CKPT=kiln-random-sd15.safetensors
mkdir -p "$WORK/models/checkpoints"
start=$(date +%s)
PYTHONUNBUFFERED=1 "$PY" scripts/comfyui_random_checkpoint.py --comfyui "$COMFYUI_DIR" \
  --out "$WORK/models/checkpoints/$CKPT" >"$OUT/checkpoint.log" 2>&1 || fail checkpoint "$(tail -3 "$OUT/checkpoint.log" | tr '\n' ' ')"
record checkpoint ok "$(grep -h '^wrote\|^ComfyUI detects' "$OUT/checkpoint.log" | tr '\n' ' ') in $(( $(date +%s) - start ))s"

# 3. kiln serve
bin/kiln serve --config configs/comfyui-gpu.yaml --listen "127.0.0.1:$PORT" \
  --data-dir "$WORK/data" --models "$WORK/models" \
  --set "workers.command=$PY" \
  --set "workers.args=[sdk/python/kiln-worker-comfy, --comfyui, $COMFYUI_DIR, --models-dir, $WORK/links]" \
  --set tiers.ram.capacity_bytes=17179869184 --set tiers.disk.capacity_bytes=53687091200 \
  >"$WORK/kiln.log" 2>&1 &
KILN_PID=$!
ready=
for _ in $(seq 1 240); do
  kill -0 "$KILN_PID" 2>/dev/null || fail serve "kiln exited: $(tail -5 "$WORK/kiln.log" | tr '\n' ' ')"
  if curl -fsS "$URL/object_info" 2>/dev/null | grep -q '"CheckpointLoaderSimple"'; then ready=1; break; fi
  sleep 1
done
[ -n "$ready" ] || fail serve "no ComfyUI node specs on /object_info after 240 s"
curl -fsS "$URL/object_info/KSampler" >"$OUT/object_info_KSampler.json" 2>/dev/null
record serve ok "worker up; /object_info has ComfyUI's nodes"

# 4. two prompts
prompt() { # seed → prompt_id
  "$PY" - "$CKPT" "$1" <<'EOF' | curl -fsS -H 'Content-Type: application/json' --data-binary @- "$URL/prompt"
import json, sys
ckpt, seed = sys.argv[1], int(sys.argv[2])
print(json.dumps({"client_id": "e2e", "prompt": {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a kiln at dawn, photograph", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
          "latent_image": ["5", 0], "seed": seed, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
          "scheduler": "normal", "denoise": 1.0}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "e2e"}}}}))
EOF
}
for seed in 1 2; do
  start=$(date +%s.%N)
  resp=$(prompt "$seed") || fail "prompt$seed" "POST /prompt refused: $resp"
  id=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["prompt_id"])' <<<"$resp")
  status=
  for _ in $(seq 1 300); do
    h=$(curl -fsS "$URL/history/$id" 2>/dev/null || echo '{}')
    status=$("$PY" -c 'import json,sys; d=json.load(sys.stdin); e=next(iter(d.values()), {}); print(e.get("status",{}).get("status_str",""))' <<<"$h")
    [ -n "$status" ] && break
    sleep 1
  done
  echo "$h" >"$OUT/history-$seed.json"
  curl -fsS "$URL/v1/jobs/$id" >"$OUT/job-$seed.json" 2>/dev/null
  [ "$status" = success ] || fail "prompt$seed" "status '${status:-none after 300 s}' (history-$seed.json)"
  png=$(find "$WORK/data" -name 'e2e_*.png' -newer "$OUT/checkpoint.log" | sort | tail -1)
  [ -n "$png" ] && cp "$png" "$OUT/e2e-$seed.png"
  size=$("$PY" -c 'import sys; from PIL import Image; print("%dx%d" % Image.open(sys.argv[1]).size)' "$png" 2>&1) \
    || fail "prompt$seed" "no readable PNG: $size"
  record "prompt$seed" ok "$id: $size PNG in $("$PY" -c "print('%.1f' % ($(date +%s.%N) - $start))")s"
done

# 5. ledger against NVML
curl -fsS "$URL/v1/devices" >"$OUT/v1-devices.json" 2>/dev/null
nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv,noheader,nounits >"$OUT/nvml.csv"
record ledger ok "$("$PY" - "$OUT/v1-devices.json" "$OUT/nvml.csv" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
devs = d if isinstance(d, list) else d.get("devices", [])
nv = [l.split(", ") for l in open(sys.argv[2]) if l.strip()]
parts = []
for dev, row in zip(devs, nv):
    parts.append("gpu%s: ledger reserved %.2f GiB of usable %.2f GiB; NVML used %.2f GiB of %.2f GiB" % (
        row[0], dev.get("reserved", 0) / 2**30, dev.get("usable", 0) / 2**30, int(row[1]) / 1024, int(row[2]) / 1024))
print("; ".join(parts))
EOF
)"

# 6. one UNet load for both prompts
loads=$(grep -c 'Requested to load BaseModel' "$WORK/kiln.log")
if [ "$loads" = 1 ]; then
  record one-copy ok "ComfyUI loaded the UNet once (the warm load) for two prompts"
else
  record one-copy failed "ComfyUI logged 'Requested to load BaseModel' $loads times (want 1)"
fi
