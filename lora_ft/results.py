"""One self-describing JSON per evaluated run under results/: the contract plots and the README read (no torch
needed; run.record builds a record)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import BEFORE_SETTINGS, DEFAULT_SEED, Config
from .errors import ConfigError, LoraFtError
from .io import write_json_atomic

REQUIRED = ("run", "kind", "model", "dataset", "split", "n_examples", "labels", "metrics", "confusion_matrix",
            "params", "config", "meta")
REQUIRED_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "per_class")
REQUIRED_TRAIN = ("seconds", "examples_per_second", "epochs", "history")
REQUIRED_META = ("smoke", "seed", "versions", "device", "created")
REQUIRED_RESOURCES = ("peak_memory_mb", "saved_mb")
TRAINED_KINDS = ("full-finetune", "tfidf-logreg", "linear-probe", "setfit")  # besides every kind starting with "lora"


def validate(result: dict) -> None:
    """Raise if result breaks the contract; a trained run must carry its train section."""

    def need(mapping, keys, where):
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise LoraFtError(f"results record {result.get('run')!r} lacks {where}{missing}: "
                              "build it with lora_ft.run.record")

    need(result, REQUIRED, "")
    need(result["metrics"], REQUIRED_METRICS, "metrics.")
    need(result["params"], ("trainable", "total"), "params.")
    need(result["meta"], REQUIRED_META, "meta.")
    if result["kind"].startswith("lora") or result["kind"] in TRAINED_KINDS:
        need(result, ("train",), "")
        need(result["train"], REQUIRED_TRAIN, "train.")
    if "resources" in result:  # optional: the committed full run's records predate it
        need(result["resources"], REQUIRED_RESOURCES, "resources.")
        bad = {k: v for k, v in result["resources"].items()
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0}
        if bad:
            raise LoraFtError(f"results record {result['run']!r}: resources {bad} are not numbers >= 0")
    n = len(result["labels"])
    matrix = np.asarray(result["confusion_matrix"])
    if matrix.shape != (n, n) or matrix.sum() != result["n_examples"]:
        raise LoraFtError(f"results record {result['run']!r}: confusion matrix {matrix.shape} does not fit "
                          f"{n} labels and {result['n_examples']} examples")


def path_of(results_dir: Path, run: str, seed: int = DEFAULT_SEED) -> Path:
    """A run's record: results/<run>.json for the notebooks' seed, else results/seeds/<run>.seed<k>.json."""
    if seed == DEFAULT_SEED:
        return Path(results_dir) / f"{run}.json"
    return Path(results_dir) / "seeds" / f"{run}.seed{seed}.json"


def write(result: dict, results_dir: Path) -> Path:
    validate(result)
    path = path_of(results_dir, result["run"], result["meta"]["seed"])
    write_json_atomic(path, result)
    return path


def read(path: Path) -> dict:
    record = json.loads(Path(path).read_text())
    validate(record)
    return record


def read_json(results_dir: Path, name: str) -> dict:
    """A JSON file under results_dir that is no run's record (a benchmark's, for one), as it is: not validated."""
    return json.loads((Path(results_dir) / name).read_text(encoding="utf-8"))


def load_all(results_dir: Path) -> dict[str, dict]:
    """Every results record of the notebooks' seed in results_dir, by run name."""
    return {record["run"]: record for record in map(read, sorted(Path(results_dir).glob("*.json")))}


def settings(record: dict) -> dict:
    """What made a record (config_settings of today's Config, settings newer than the record as BEFORE_SETTINGS or
    their defaults), plus its "recipe" (settings outside Config, e.g. SetFit's) where it has one."""
    made = {**BEFORE_SETTINGS, **record["config"], "smoke": record["meta"]["smoke"]}
    found = config_settings(Config(**made))
    return found if "recipe" not in record else {**found, "recipe": record["recipe"]}


def finished(path: Path, wanted: dict) -> dict | None:
    """The record at path if it was made with the settings wanted (as settings() gives them), else None: what the
    resumable grids skip."""
    if not Path(path).exists():
        return None
    record = read(path)
    return record if settings(record) == wanted else None


def config_settings(config: Config) -> dict:
    """What settings() keeps of a Config: those that shape the trained weights, less the seed (named by the file); a
    local data set by its name, as a checkout (and the data beside it) can move."""
    found = {k: v for k, v in config.trained_settings().items() if k != "seed"}
    return {**found, "dataset": Path(found["dataset"]).name} if Path(found["dataset"]).is_absolute() else found


def records(folder: Path, name: str) -> list[dict]:
    """name's records over all seeds, seed 42 first; all must share their settings."""
    reference = default_seed_record(folder, name)
    found = [reference] + [read(p) for p in sorted((Path(folder) / "seeds").glob(f"{name}.seed*.json"))
                           if p.name.removeprefix(f"{name}.seed").removesuffix(".json").isdigit()]
    wanted = settings(reference)
    stale = [r["meta"]["seed"] for r in found if settings(r) != wanted]
    if stale:
        differ = {k for r in found for k, v in settings(r).items() if v != wanted.get(k)}
        raise ConfigError(f"the records of {name!r} with seeds {stale} were made with other settings than "
                          f"{path_of(folder, name)} (they differ in {sorted(differ)}): run "
                          f"`{rerun_command(folder, name)}` to redo them")
    return found


def rerun_command(folder: Path, name: str) -> str:  # the command that adds seeds to name's records
    step = {"recipes": f"recipes --names {name}", "curves": "curves"}.get(Path(folder).name, f"seeds --runs {name}")
    return f"python -m lora_ft {step}"


def default_seed_record(folder: Path, name: str) -> dict:  # a run's seed-42 record
    path = path_of(folder, name)
    if not path.exists():
        raise ConfigError(f"no record {path} to take the settings from: run the notebook or CLI step that writes "
                          f"{name!r} first (seed {DEFAULT_SEED})")
    return read(path)
