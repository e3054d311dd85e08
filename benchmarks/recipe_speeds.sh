#!/usr/bin/env bash
# Notebook 08's speed and memory columns: every recipe of lora_ft.grids.RECIPES timed by benchmarks/throughput.py
# in a process of its own, so that each peak memory is that recipe's alone (20 steps after 2 warm-up steps, one
# repeat). Each process updates its recipe's entry of results/recipes/speed.json. Extra arguments go to
# throughput.py, e.g. `bash benchmarks/recipe_speeds.sh --steps 40`; with other steps or repeats than the file's,
# the first process starts the file afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in $(python3 -c "from lora_ft.grids import RECIPES; print(*RECIPES)"); do
  python3 benchmarks/throughput.py --recipes "" --which "$name" --repeats 1 --steps 20 "$@"
done
