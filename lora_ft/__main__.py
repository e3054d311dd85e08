"""`python -m lora_ft STEP [--config FILE] [key=value ...]`: see lora_ft.cli."""

from .cli import main

raise SystemExit(main())
