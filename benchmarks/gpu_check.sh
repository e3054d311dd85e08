#!/usr/bin/env bash
# The project's GPU paths on a machine with a CUDA GPU, in one go (about 10 minutes on an H100):
#   1. the tests that only run there (QLoRA's 4-bit step, auto precision) and those that train a tiny model on it,
#   2. the default LoRA run in bf16 (or fp16), QLoRA (quantize_4bit=true, needs `pip install bitsandbytes`),
#      LoRA in fp16, and the baselines with full fine-tuning, each on the default data, scored on the test split,
#   3. benchmarks/throughput.py: the default LoRA recipe against full fine-tuning and the previous default.
#
#   bash benchmarks/gpu_check.sh [FOLDER]     # FOLDER (default /tmp/lora-ft-gpu) gets data/, model/, results/
#
# The project's own data/, model/ and results/ are left alone, except that throughput.py prepares data/ as usual.
# Every step runs even when one before it failed; a run's record is kept only when it succeeded. The last lines
# sum up the kept records (docs/scaling.md has
# what an H100 gave).
set -u
cd "$(dirname "$0")/.."
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here: this script checks the GPU paths')" \
  || exit 2
ROOT=${1:-/tmp/lora-ft-gpu}
mkdir -p "$ROOT/gpu-check"
START=$(date +%s)
step() { echo "=== [$(( $(date +%s) - START )) s] $*"; "$@"; local status=$?; echo "=== exit $status"; return $status; }
keep() { cp "$ROOT/results/$1.json" "$ROOT/gpu-check/$2.json" 2>/dev/null || echo "no record for $2"; }
# each train names every setting it changes: a step's settings otherwise carry over to the next (cli.make_config)
step python3 -m pytest -v -o addopts="" -p no:cacheprovider tests/test_model_families.py tests/test_variants.py \
  tests/test_lora.py tests/test_lora_from_scratch.py
step python3 -m lora_ft prepare output_root="$ROOT"
step python3 -m lora_ft train output_root="$ROOT" quantize_4bit=false precision=auto && keep lora lora-auto
step python3 -m lora_ft train output_root="$ROOT" quantize_4bit=true precision=auto && keep lora qlora
step python3 -m lora_ft train output_root="$ROOT" quantize_4bit=false precision=fp16 && keep lora lora-fp16
step python3 -m lora_ft baseline output_root="$ROOT" quantize_4bit=false precision=auto && keep full-finetune full-finetune
step python3 benchmarks/throughput.py --recipes project,full-finetune,previous-default --repeats 3 --steps 50
python3 - "$ROOT/gpu-check" <<'EOF'
import json, sys
from pathlib import Path

print("| run | accuracy | macro-F1 | training s | examples/s | peak GPU MB |\n|---|---|---|---|---|---|")
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    record = json.loads(path.read_text())
    train, metrics = record.get("train", {}), record["metrics"]
    print(f"| {path.stem} | {metrics['accuracy']:.4f} | {metrics['f1_macro']:.4f} | {train.get('seconds', '-')} | "
          f"{train.get('examples_per_second', '-')} | {record.get('resources', {}).get('peak_gpu_memory_mb', '-')} |")
EOF
