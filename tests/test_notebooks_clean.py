"""Committed notebooks read anywhere: executed top to bottom, no progress widgets or their state, no local paths.

NOTE for the lead: fails on notebooks whose outputs were cleared or predate the quiet Trainer set-up until they are
re-executed with the final code.
"""

import json
import re

import pytest

from lora_ft.config import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
LOCAL_PATH = re.compile(r"/root/|/work/|/home/|site-packages")


def cells(path):
    return json.loads(path.read_text())["cells"]


def output_texts(cell) -> list[str]:
    """Every text an output shows (streams, tracebacks, plain, HTML, Markdown), images left out."""
    texts = []
    for output in cell.get("outputs", []):
        texts += ["".join(output.get("text", [])), "\n".join(output.get("traceback", []))]
        texts += ["".join(value) if isinstance(value, list) else str(value)
                  for kind, value in output.get("data", {}).items() if not kind.startswith("image/")]
    return texts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_widgets_or_widget_state(path):
    assert "widgets" not in json.loads(path.read_text())["metadata"], f"{path.name} carries widget state"
    widgets = [i for i, cell in enumerate(cells(path)) for output in cell.get("outputs", [])
               if WIDGET in output.get("data", {})]
    assert not widgets, f"{path.name}: progress widgets in the outputs of cells {widgets}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_local_paths_in_outputs(path):
    found = [(i, match.group()) for i, cell in enumerate(cells(path)) for text in output_texts(cell)
             for match in LOCAL_PATH.finditer(text)]
    assert not found, f"{path.name}: local paths in the outputs of cells {found}: print paths relative to the project"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_executed_top_to_bottom(path):
    counts = [cell["execution_count"] for cell in cells(path) if cell["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts}: run it top to bottom in a fresh kernel "
        "(jupyter nbconvert --to notebook --execute --inplace)")
