"""What made a checkpoint, an adapter or a record, and the checks that refuse mixing them up: `train --resume`
continues only a checkpoint this run's settings made; evaluate, predict and export read an adapter only with the
settings, labels and data it was trained with."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from datasets import DatasetDict, load_from_disk
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import data, results
from .config import BEFORE_SETTINGS, BUDGETED, DATA_FIELDS, FINGERPRINT, NOT_TRAINED, Config
from .errors import ConfigError, listed
from .io import follow_umask, restore_backup, write_json_atomic
from .settings import FIELDS, as_word


def fingerprint(config: Config, labels: list[str], splits: DatasetDict) -> dict:
    """What made a checkpoint or an adapter: the settings that shape its weights, its classes, and its data."""
    return {"settings": config.trained_settings(), "labels": list(labels), "data": data.digest(splits)}


def same_training(a: dict, b: dict) -> bool:
    """Whether two records' (or configs') settings train the same weights: equal but for NOT_TRAINED."""
    return ({k: v for k, v in a.items() if k not in NOT_TRAINED}
            == {k: v for k, v in b.items() if k not in NOT_TRAINED})


def record_path(run: str, config: Config) -> Path:
    """Where config's run writes its record (results/<run>.json, or results/seeds/ for another seed)."""
    return results.path_of(config.paths.results, run, config.seed)


def resumable_checkpoint(config: Config) -> Path | None:
    """The checkpoint `train --resume` continues: the last one in model/checkpoints/, if config's settings made it."""
    checkpoint = last_checkpoint(config)
    if checkpoint is not None:  # BUDGETED settings follow the data's size (Config.budget): train compares them
        def unbudgeted(settings: dict) -> dict:
            return {k: v for k, v in settings.items() if k not in BUDGETED}

        saved = read_fingerprint(checkpoint)
        refuse_mismatch({**saved, "settings": unbudgeted(saved.get("settings") or {})},
                        {"settings": unbudgeted(config.trained_settings())}, f"checkpoint {checkpoint}",
                        resume_fix(checkpoint))
    return checkpoint


def follow_move(checkpoint: Path) -> None:
    """Re-point the Trainer's state at this folder after the output root moved: it names the best checkpoint by
    absolute path, and a resumed run would otherwise rotate the real one away as not the best."""
    path = checkpoint / "trainer_state.json"
    state = json.loads(path.read_text())
    best = state.get("best_model_checkpoint")
    if best is not None and Path(best).parent != checkpoint.parent:
        moved = checkpoint.parent / Path(best).name
        write_json_atomic(path, {**state, "best_model_checkpoint": str(moved) if moved.is_dir() else None})


def last_checkpoint(config: Config) -> Path | None:
    """The last checkpoint in model/checkpoints/ that carries a fingerprint (one without was cut off while saving)."""
    folder = config.paths.checkpoints
    found = [p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    proven = [p for p in found if (p / FINGERPRINT).is_file()]
    if found and not proven:
        raise ConfigError(f"the checkpoints in {folder} carry no fingerprint (saved by an older version, or cut off "
                          "while saving), so nothing proves they belong to this run: train without --resume")
    return max(proven, key=lambda p: int(p.name.rsplit("-", 1)[-1]), default=None)


def read_fingerprint(folder: Path) -> dict | None:
    """The fingerprint saved in a checkpoint or adapter folder; None for one saved before fingerprints."""
    path = Path(folder) / FINGERPRINT
    return json.loads(path.read_text()) if path.is_file() else None


class WriteFingerprint(TrainerCallback):
    """Write the run's fingerprint into each checkpoint once the Trainer has saved it: --resume checks it."""

    def __init__(self, made: dict):
        self.made = made

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            write_json_atomic(folder / FINGERPRINT, self.made)
            follow_umask(folder)  # the Trainer writes its weights as private 0600 files


def saved_adapter(folder: Path, **changes) -> tuple[Config, list[str]]:
    """An adapter folder's settings (changes applied) and class names, checked against its saved fingerprint."""
    folder = Path(folder)
    settings, labels = folder / "lora_ft_config.json", folder / "labels.json"
    restore_backup(folder)
    if not (settings.is_file() and labels.is_file()):
        raise ConfigError(f"no saved adapter in {folder}: run the train step first, or pass the folder it saved")
    config, names = Config.load(settings, **changes), json.loads(labels.read_text())
    made = read_fingerprint(folder)
    if made is not None:
        refuse_mismatch(made, {"settings": config.trained_settings(), "labels": names}, f"the adapter in {folder}",
                        "its files were edited or mixed with another adapter's: save it again with train, or "
                        "copy the whole folder again")
    return config, names


def prepared_for(trained: Config, folder: Path) -> DatasetDict:
    """The prepared data an adapter was trained on, read without preparing anything; a ConfigError otherwise."""
    target, wanted = trained.paths.data, trained.data_settings()
    saved = data.saved_settings(target)
    if saved is None:
        raise ConfigError(f"no prepared data in {target}: prepare the data the adapter in {folder} was trained on "
                          "(its settings are in lora_ft_config.json), then evaluate")
    differ = [f"{k} {wanted[k]!r} for the adapter, {saved.get(k)!r} prepared" for k in DATA_FIELDS
              if saved.get(k) != wanted[k]]
    if differ:
        raise ConfigError(f"the prepared data in {target} is not what the adapter in {folder} was trained on "
                          f"({'; '.join(differ[:5])}): prepare again with the adapter's data settings, or train "
                          "again on this data (evaluate never prepares data)")
    splits = load_from_disk(str(target / "splits"))
    made = read_fingerprint(folder)
    if made is not None and made.get("data") != data.digest(splits):
        raise ConfigError(f"the prepared data in {target} has the adapter's settings but other examples than it was "
                          f"trained on (the source changed since): train again on this data")
    return splits


def refuse_mismatch(saved: dict, current: dict, what: str, fix: str) -> None:
    """A ConfigError naming what differs between a saved fingerprint and the current one (only current's parts,
    NOT_TRAINED settings aside); "{settings}" in fix becomes the differing settings' saved values, as key=value."""
    differ, words = [], []
    if "settings" in current:
        here = current["settings"]
        there = {k: v for k, v in (saved.get("settings") or {}).items() if k not in NOT_TRAINED}
        if there:  # a setting newer than the fingerprint had the value it had before it existed
            there = {**{k: _before(k) for k in here if k not in there}, **there}
        keys = [k for k in sorted(set(there) | set(here)) if there.get(k) != here.get(k)]
        differ += [f"{k} {there.get(k)!r} there, {here.get(k)!r} now" for k in keys]
        words += [f"{k}={as_word(there.get(k))}" for k in keys]
    if "labels" in current and saved.get("labels") != current["labels"]:
        differ.append(f"labels {listed(saved.get('labels') or [])} there, {listed(current['labels'])} now")
    if "data" in current and saved.get("data") != current["data"]:
        differ.append("other prepared examples")
    if differ:
        more = f"; ... {len(differ) - 4} more" if len(differ) > 4 else ""
        fix = fix.replace("{settings}", " ".join(words) or "the same data")
        raise ConfigError(f"{what} was made by another run ({'; '.join(differ[:4])}{more}): {fix}")


def _before(name: str):
    """The value setting name had in runs made before it existed: BEFORE_SETTINGS, else its default."""
    if name in BEFORE_SETTINGS:
        return BEFORE_SETTINGS[name]
    return None if FIELDS[name].default is dataclasses.MISSING else FIELDS[name].default


def resume_fix(checkpoint: Path) -> str:
    return ("run train without --resume to start afresh (the checkpoint is replaced), or resume with the settings "
            f"that made it: train --resume {{settings}} (all are in {checkpoint / FINGERPRINT})")
