"""Committed records match the code: every full-run record in results/ (and results/seeds/) holds the settings that
the code's defaults and its notebook's `parameters` cell produce today, so a changed default or an edited parameter
cannot be committed without re-running the notebook that writes the record.
"""

import functools
import json
import sys

import pytest

from lora_ft import Config, data, experiments, results, sources
from lora_ft.config import FULL_FINETUNE_LEARNING_RATE, ROOT

RESULTS = ROOT / "results"

NOTEBOOK_OF = {  # run name -> the notebook that writes its record
    "majority": "02_baseline_evaluation",
    "pretrained-baseline": "02_baseline_evaluation",
    "tfidf-logreg": "02_baseline_evaluation",
    "linear-probe": "02_baseline_evaluation",
    "full-finetune": "02_baseline_evaluation",
    "lora": "03_lora_training",
    "lora-reloaded": "03_lora_training",
    "lora-from-scratch": "05_lora_from_scratch",
    "lora-peft-same-budget": "05_lora_from_scratch",
    "sweep-*": "06_lora_sweep",
}


def parameters(notebook: str) -> dict:
    """The values that the notebook's `parameters`-tagged cell sets."""
    cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    values = {}
    exec(source, {}, values)
    return values


def prepared() -> Config:
    """What notebook 01 saves beside the prepared data in a full run, and notebooks 02 to 06 start from."""
    return Config(smoke=False, **parameters("01_data_preparation"))


@functools.cache
def training_examples(config: Config) -> int:
    """The size of the training split that config prepares (read from the corpus: data/ holds small-mode data here)."""
    frame, declared = sources.load_frame(config)
    frame, _ = data.clean(frame)
    names = data.label_names(frame, declared, config.labels)
    return len(data.split(frame.assign(label=data.to_names(frame, declared)), names, config)["train"])


def expected(run: str) -> Config:
    """The settings the run's notebook gives its record today: what each notebook applies to the prepared settings,
    with the budget rule applied to the training split as the run applies it (Config.budget)."""
    notebook = NOTEBOOK_OF.get("sweep-*" if run.startswith("sweep-") else run)
    if notebook is None:
        pytest.fail(f"no notebook is known to write {run!r}: map it in NOTEBOOK_OF of tests/test_drift.py")
    values, config = parameters(notebook), prepared()
    if notebook == "02_baseline_evaluation":  # Config's defaults; full fine-tuning at its own learning rate
        if run == "full-finetune":
            return config.replace(learning_rate=FULL_FINETUNE_LEARNING_RATE).budget(training_examples(config))
        return config.untrained()  # the reference runs that take no optimizer steps
    if notebook == "03_lora_training":
        return config.replace(**values["overrides"]).budget(training_examples(config))
    if notebook == "05_lora_from_scratch":
        return config.replace(**values, early_stopping_patience=0).budget(training_examples(config))
    # 06: the notebook's grid (experiments.SWEEP with the notebook's changes) through experiments.sweep
    points = {p.name: p for p in experiments.sweep_grid(**{**experiments.SWEEP, **values["grid"]})}
    if run not in points:
        pytest.fail(f"{run!r} is not a point of notebook 06's grid ({sorted(points)}): delete its record, or add "
                    "the point to the grid (experiments.SWEEP)")
    return points[run].settings(config)


def committed() -> list:
    paths = sorted(RESULTS.glob("*.json")) + sorted((RESULTS / "seeds").glob("*.json"))
    return [pytest.param(path, id=str(path.relative_to(RESULTS))) for path in paths]


@pytest.mark.parametrize("path", committed())
def test_a_committed_record_holds_the_settings_its_notebook_gives_today(path):
    record = results.read(path)
    assert not record["meta"]["smoke"], f"{path} is a small-mode record: small runs go to smoke/, not results/"
    today = results.settings({"config": expected(record["run"]).as_json(), "meta": {"smoke": False}})
    made = results.settings(record)
    differ = [f"{name}: recorded {made[name]!r}, today {value!r}" for name, value in today.items()
              if made[name] != value]
    notebook = NOTEBOOK_OF.get("sweep-*" if record["run"].startswith("sweep-") else record["run"])
    assert not differ, (f"{path.relative_to(ROOT)} was made with other settings than notebooks/{notebook}.ipynb "
                        f"gives today ({'; '.join(differ)}): re-run that notebook (and "
                        f"`python -m lora_ft seeds --runs {record['run']}` for its other seeds)")


def test_the_command_line_runs_the_notebooks_settings():
    """`python -m lora_ft sweep`, `train` and `baseline` write the records notebooks 06, 03 and 02 write."""
    assert parameters("06_lora_sweep")["grid"] == {}  # notebook 06 runs experiments.SWEEP, as the CLI does
    assert parameters("03_lora_training")["overrides"] == {}  # notebook 03 trains Config's defaults, as train does
    assert set(parameters("02_baseline_evaluation")) == {"run_full_finetune"}  # no setting restated


@pytest.mark.parametrize("name", ["emotion", "sst2", "imdb"])
def test_a_public_benchmark_record_holds_the_settings_public_data_gives_today(name):
    """benchmarks/public_data.py's settings, with the budget rule applied to the record's training split, are the
    record's: a changed default or benchmark setting cannot leave results/public/ stale unnoticed."""
    path = RESULTS / "public" / f"{name}.json"
    if not path.exists():
        pytest.skip(f"no {path.relative_to(ROOT)} yet: run benchmarks/public_data.py {name}")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import public_data  # a script beside the package, not a module of it

    record, settings = results.read(path), public_data.BENCHMARKS[name]
    folder = ROOT.parent / "shared" / "datasets" / settings["dataset"]  # only its name is compared
    today = Config(smoke=False, **{**settings, "dataset": str(folder)})
    wanted = results.config_settings(today.budget(record["data"]["splits"]["train"]))
    made = results.settings(record)
    differ = {k: (made.get(k), v) for k, v in wanted.items() if made.get(k) != v}
    assert not differ, f"{path.relative_to(ROOT)} differs from today's settings (recorded, today): {differ}: re-run " \
                       f"python benchmarks/public_data.py {name}"
