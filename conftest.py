"""Test-suite set-up: everything runs in small mode, against this checkout's package."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Set before anything reads it; notebook kernels started by nbmake inherit both variables.
os.environ["LORA_FT_SMOKE"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the defaults need no network; fail fast rather than hang
