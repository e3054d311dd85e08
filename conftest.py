"""Test-suite set-up: everything runs in small mode, against this checkout's package."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Set before anything reads it; notebook kernels started by nbmake inherit both variables.
os.environ["LORA_FT_SMOKE"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the defaults need no network; fail fast rather than hang
# pytest-xdist (pyproject's addopts) runs the tests in one process per core: each takes its share of the cores,
# since PyTorch would otherwise start a thread per core in every process and they would contend for them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


import contextlib  # noqa: E402  (after the variables above, which lora_ft reads when imported)
import io  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

from lora_ft import cli  # noqa: E402

SMALL_RUN = ["train_size=64", "eval_size=32", "epochs=1"]
TRAINER = "contrastive=false"  # 21 per class would train on pairs; the Trainer's recipe keeps checkpoints to resume


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """One small `prepare` then `train --resume` from the command line, shared by the test modules that need a trained
    adapter: (its root, what train printed). Use copy_of_small_run to change it."""
    root = tmp_path_factory.mktemp("small-run")
    assert cli.main(["prepare", f"output_root={root}", *SMALL_RUN]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["train", "--resume", TRAINER, f"output_root={root}"]) == 0
    return root, printed.getvalue()


@pytest.fixture(scope="module")
def copy_of_small_run(small_run, tmp_path_factory):
    """A module's own copy of small_run: (root, what train printed)."""
    root = tmp_path_factory.mktemp("small-run-copy") / "root"
    shutil.copytree(small_run[0], root)
    return root, small_run[1]


SHARED = ROOT.parent / "shared" / "datasets"


# pytest-xdist runs each group on one worker, in the order collected (--dist loadgroup). What writes to the default
# output root (smoke/ in small mode) is one group: the notebooks read what the ones before them wrote, and test_steps
# prepares the data notebook 01 prepares; the notebooks in OWN_FOLDERS train and write in folders of their own. Every
# other test module is a group of its own, so that its module-scoped runs are made once, not once per worker; the
# modules that share the session's small_run are one group, which makes it once.
SMOKE_ROOT = ("notebooks/", "tests/test_steps.py")
OWN_FOLDERS = ("09_many_tasks", "10_label_errors")
SMALL_RUN_USERS = ("tests/test_bad_settings.py", "tests/test_cli.py")


def xdist_group(nodeid: str) -> str:
    if nodeid.startswith(SMOKE_ROOT):
        return next((name for name in OWN_FOLDERS if name in nodeid), "smoke-root")
    return "small-run" if nodeid.startswith(SMALL_RUN_USERS) else nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups
def pytest_collection_modifyitems(items):
    """Notebooks 09 and 10 train on dair-ai emotion and SST-2: from ../shared/datasets here, from the hub online."""
    missing = not ((SHARED / "emotion").is_dir() and (SHARED / "sst2").is_dir())
    skip = pytest.mark.skip(reason=f"notebooks 09 and 10 need the emotion and SST-2 copies in {SHARED}, absent "
                            "here (online they read them from the hub; CI has no network)")
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group(item.nodeid)))
        if missing and ("09_many_tasks" in item.nodeid or "10_label_errors" in item.nodeid):
            item.add_marker(skip)
