"""The notebooks' steps as functions of a Config: what `python -m lora_ft <step>` runs.

Validate, then act: each step first calls check(), which raises a LoraFtError naming the problem and the fix for
anything it can know before writing (settings, model, LoRA targets, checkpoint, adapter), so that a failing step
leaves nothing behind, not even the settings that the next step would start from (docs/errors.md).

Under torchrun or accelerate launch every process runs each step, and only the main one writes files (on CPU,
launch with `accelerate launch --cpu`, or set ACCELERATE_USE_CPU=1 for torchrun, as the Trainer needs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from transformers import ProgressCallback, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import baselines, card, data, results, training
from .config import DATA_FIELDS, Config
from .errors import ConfigError, DataError, listed
from .io import on_main_process, processes, replace_dir_atomic, restore_backup, write_json_atomic
from .modeling import (
    FINGERPRINT,
    add_lora,
    add_lora_from_scratch,
    count_params,
    head_modules,
    limit_tokenizer,
    load_adapter,
    load_tokenizer,
    lora_targets,
    model_for_training,
    model_skeleton,
    quantization_config,
    save_adapter,
)
from .sweep import GRID, TARGET_SETS, grid
from .sweep import run as run_grid

# notebook 02's reference runs, by run name: each takes the splits and a Config and returns its record
BASELINES = {
    "majority": baselines.majority,
    "pretrained-baseline": baselines.pretrained_baseline,
    "tfidf-logreg": baselines.tfidf_logreg,
    "linear-probe": baselines.linear_probe,
    "full-finetune": baselines.full_finetune,
}
# notebook 05's same-budget comparison: peft's LoRA and this project's lora.py, by run name
SAME_BUDGET = {"lora-peft-same-budget": add_lora, "lora-from-scratch": add_lora_from_scratch}

# Settings that change no trained weight: where the run lives, how it is batched for scoring, the CI switch
NOT_TRAINED = ("output_root", "eval_batch_size", "smoke")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; checkpoint is the last one this run saved (None before its first)."""

    def __init__(self, checkpoint: Path | None):
        super().__init__()
        self.checkpoint = checkpoint


def check(step: str, config: Config, resume: bool = False, targets=()) -> Path | None:
    """Everything step needs that can be known before it writes anything; returns the checkpoint to resume from.

    Steps that prepare data save config's settings for the next steps, so all of them are checked: precision,
    4-bit loading, the model (loadable, safetensors, its own code), max_length, target_modules and modules_to_save
    against the model's module names (read from its configuration, no weights loaded), and for train --resume that
    the last checkpoint was made by this run's settings.
    """
    training.resolve_precision(config.precision)
    quantization_config(config.quantize_4bit)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    if config.max_length > tokenizer.model_max_length:
        raise ConfigError(f"max_length={config.max_length} is beyond the {tokenizer.model_max_length} tokens model "
                          f"{config.model!r} reads: set max_length to at most {tokenizer.model_max_length}")
    skeleton = model_skeleton(config.model, config.trust_remote_code)
    lora_targets(skeleton, config.target_modules)
    head_modules(skeleton, config.modules_to_save)
    for name in targets:
        if name not in TARGET_SETS:
            raise ConfigError(f"unknown target set {name!r}: choose from {sorted(TARGET_SETS)}")
        lora_targets(skeleton, TARGET_SETS[name])
    if step != "train" or not resume:
        return None
    checkpoint = _last_checkpoint(config)
    if checkpoint is not None:
        _refuse_mismatch(json.loads((checkpoint / FINGERPRINT).read_text()), {"settings": _trained_settings(config)},
                         f"checkpoint {checkpoint}", _resume_fix(checkpoint))
    return checkpoint


def fingerprint(config: Config, labels: list[str], splits: DatasetDict) -> dict:
    """What made a checkpoint or an adapter: the settings that shape its weights, its classes, and its data."""
    return {"settings": _trained_settings(config), "labels": list(labels), "data": data.digest(splits)}


def prepare(config: Config, log=print) -> DatasetDict:
    """Load, clean, split and tokenize the data (notebook 01); reused when the saved settings match."""
    check("prepare", config)
    splits = _splits(config)
    sizes = ", ".join(f"{len(splits[name]):,} {name}" for name in data.SPLITS)
    _log(log, f"prepared data in {config.paths.data}: {sizes}; labels {data.labels_of(splits)}")
    return splits


def baseline(config: Config, full_finetune: bool = True, log=print) -> dict[str, dict]:
    """The reference records on the test split (notebook 02): majority class, the untrained pretrained model,
    TF-IDF + logistic regression, a linear probe on the frozen encoder and, unless full_finetune is False (it takes
    longer than LoRA), full fine-tuning. Each is written as soon as it is done."""
    check("baseline", config)
    splits = _splits(config)
    steps = [step for run, step in BASELINES.items() if full_finetune or run != "full-finetune"]
    records = {}
    for step in steps:
        record = step(splits, config)
        _write_record(record, config, log)
        records[record["run"]] = record
    return records


def train(config: Config, resume: bool = False, log=print, write: bool = True) -> dict:
    """Train LoRA adapters (notebook 03), save them to model/lora-adapter/, write the test record "lora", then the
    adapter's model card and its merged export model/lora-merged/.

    resume continues from the last checkpoint in model/checkpoints/ when there is one, if this run made it;
    write=False (an extra seed's run, lora_ft.seeds) returns the record without writing it or a merged export.
    """
    checkpoint = check("train", config, resume=resume)
    splits = _splits(config)
    labels, test = data.labels_of(splits), splits["test"]
    made = fingerprint(config, labels, splits)
    if checkpoint is not None:  # its settings matched; now its classes and data, known once the data is prepared
        _refuse_mismatch(json.loads((checkpoint / FINGERPRINT).read_text()), made, f"checkpoint {checkpoint}",
                         _resume_fix(checkpoint))
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    with baselines.measure() as resources:  # as for full fine-tuning: loading and training set the peak
        model = add_lora(model_for_training(config, labels), config)
        params = count_params(model)
        _log(log, str(config))
        _log(log, f"training {params['trainable']:,} of {params['total']:,} weights "
                  f"on {len(splits['train']):,} examples")
        trainer = training.build_trainer(config, model, tokenizer, splits)
        trainer.add_callback(_WriteFingerprint(made))
        if resume:
            _log(log, f"resuming from {checkpoint}" if checkpoint
                 else f"no checkpoint in {config.paths.checkpoints}: training from the start")
        try:
            info = training.train(trainer, None if checkpoint is None else str(checkpoint))
        except KeyboardInterrupt:
            for callback in trainer.callback_handler.callbacks:  # end the progress bar, so the CLI's line comes last
                if isinstance(callback, ProgressCallback) and callback.training_bar is not None:
                    callback.training_bar.close()
            last = _last_checkpoint(config)
            ours = last is not None and json.loads((last / FINGERPRINT).read_text()) == made
            raise Interrupted(last if ours else None) from None
        on_main_process(save_adapter, model, tokenizer, config, labels, config.paths.adapter, made)
    logits = training.predict_logits(model, tokenizer, test, config.eval_batch_size)
    record = results.build("lora", "lora", config, labels, "test", np.array(test["label"]), logits.argmax(-1),
                           params, info, resources)
    on_main_process(card.write, _card(config, labels, config.paths.adapter, record), config.paths.adapter)
    resources["saved_mb"] = baselines.folder_mb(config.paths.adapter)  # the record's, card included
    _log(log, f"adapter saved in {config.paths.adapter} ({resources['saved_mb']} MB)")
    if write:  # an extra seed's run (lora_ft.seeds) is only scored: no record here, no merged export
        _write_record(record, config, log)
        if not config.quantize_4bit:  # a 4-bit base cannot be merged into full weights
            export(config, log=log)
    return record


def same_budget(config: Config, splits, runs=tuple(SAME_BUDGET), write: bool = True) -> dict[str, tuple]:
    """peft's LoRA and this project's from-scratch LoRA (notebook 05) trained alike on a stratified subsample of
    config.train_size training examples, then tested: (trained model, record) by run."""
    splits = DatasetDict({**splits, "train": data.subsample(splits["train"], config.train_size, config.split_seed)})
    labels, test = data.labels_of(splits), splits["test"]
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    trained = {}
    for run in runs:
        model = SAME_BUDGET[run](model_for_training(config, labels), config)
        # a fixed budget with nothing to choose early: one validation, at the end, which also keeps timing comparable
        trainer = training.build_trainer(config, model, tokenizer, splits, disable_tqdm=True,
                                         eval_strategy="epoch", save_strategy="epoch",
                                         output_dir=config.paths.model / f"checkpoints-{run}")
        info = training.train(trainer)
        logits = training.predict_logits(model, tokenizer, test, config.eval_batch_size)
        record = results.build(run, "lora", config, labels, "test", np.array(test["label"]), logits.argmax(-1),
                               count_params(model), info)
        if write:
            on_main_process(results.write, record, config.paths.results)
        trained[run] = (model, record)
    return trained


def evaluate(config: Config, log=print) -> dict:
    """Reload the saved adapter into a fresh base model and score the test split: the record "lora-reloaded".

    The settings are the adapter's own (config gives only output_root and eval_batch_size); training time,
    history, parameter counts and resources come from the record "lora" that train wrote with the adapter.
    The data is the prepared data the adapter was trained on, read and never prepared again: anything else is
    refused, and results/lora-reloaded.json is the only file written.
    """
    folder = config.paths.adapter
    trained, labels = _saved_adapter(folder, output_root=config.output_root, eval_batch_size=config.eval_batch_size)
    path = _path_of("lora", trained)
    trained_run = json.loads(path.read_text()) if path.exists() else None
    if trained_run is None or _predictive(trained_run["config"]) != _predictive(results.build_config(trained)):
        raise ConfigError(f"{path} is missing or is not the record of the adapter in {folder}: "
                          "run the train step again, which writes both")
    splits = _prepared_for(trained, folder)
    test = splits["test"]
    tokenizer = load_tokenizer(str(folder), trust_remote_code=trained.trust_remote_code)
    model = load_adapter(folder, trained, labels)
    logits = training.predict_logits(model, tokenizer, test, trained.eval_batch_size)
    record = results.build("lora-reloaded", "lora", trained, labels, "test", np.array(test["label"]),
                           logits.argmax(-1), trained_run["params"], trained_run["train"],
                           trained_run.get("resources"))  # None for a record older than the resources section
    _write_record(record, trained, log)
    same = record["confusion_matrix"] == trained_run["confusion_matrix"]
    _log(log, f"same confusion matrix as the record of the trained model: {'yes' if same else 'NO'}")
    return record


def sweep(config: Config, ranks=GRID["ranks"], alpha_ratios=GRID["alpha_ratios"], targets=GRID["targets"],
          extra_targets=GRID["extra_targets"], train_size: int | None = GRID["train_size"],
          epochs: float = GRID["epochs"], log=print) -> dict[str, dict]:
    """Train and test every rank x alpha/r x target set, and each extra target set at sweep.EXTRA_POINT, for epochs
    on a stratified training subsample; the defaults are notebook 06's grid (sweep.GRID).

    Runs whose results file holds the same settings are skipped. train_size None trains on the whole split.
    """
    check("sweep", config, targets=(*targets, *extra_targets))
    splits = _splits(config)
    splits["train"] = data.subsample(splits["train"], train_size, config.split_seed)
    # what each run's record says it trained on
    config = config.replace(train_size=len(splits["train"]), epochs=float(epochs))
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    points = grid(tuple(ranks), tuple(alpha_ratios), tuple(targets), tuple(extra_targets))
    _log(log, f"{len(points)} configurations, {len(splits['train']):,} training examples each")
    return run_grid(config, splits, tokenizer, points, log=lambda line: _log(log, line))


def predict(config: Config, texts, adapter: Path | str | None = None) -> list[tuple[str, float]]:
    """(label, probability) for each text from a saved adapter (default: config's), served by serving_model."""
    texts = list(texts)
    if not texts:
        raise DataError("no texts to classify: give them as arguments, or in a file with one text per line")
    blank = [i + 1 for i, text in enumerate(texts) if not str(text).strip()]
    if blank:
        raise DataError(f"text(s) number {listed(blank)} are blank: give texts with words in them")
    model, tokenizer, trained, labels = serving_model(config, adapter)
    probs = probabilities(model, tokenizer, trained, texts, config.eval_batch_size)
    return [(labels[i], float(p[i])) for p, i in zip(probs, probs.argmax(-1))]


def serving_model(config: Config, adapter: Path | str | None = None):
    """(model, tokenizer, its settings, labels) from a saved adapter (default: config's), merged into the base, and in
    bf16 where the hardware computes it unless config.precision is fp32 or fp16: ~3x the examples/s of the unmerged
    fp32 model here, same predictions on 2,000 validation tweets (benchmarks/throughput.py)."""
    folder = Path(adapter) if adapter is not None else config.paths.adapter
    trained, labels = _saved_adapter(folder)
    tokenizer = load_tokenizer(str(folder), trust_remote_code=trained.trust_remote_code)
    model = load_adapter(folder, trained, labels, merge=True)
    bf16 = config.precision in ("auto", "bf16") and training.bf16_native()
    if bf16 and not trained.quantize_4bit:  # a 4-bit base keeps its own compute dtype
        model = model.to(torch.bfloat16)
    return model, tokenizer, trained, labels


def probabilities(model, tokenizer, trained: Config, texts: list[str], batch_size: int) -> np.ndarray:
    """Class probabilities of texts (rows) under the tokenization the model was trained with."""
    inputs = data.tokenize(Dataset.from_dict({"text": texts}), tokenizer, trained.max_length, trained.truncation)
    logits = training.predict_logits(model, tokenizer, inputs, batch_size)
    return torch.from_numpy(logits).float().softmax(-1).numpy()


def predict_file(config: Config, source: Path, target: Path, adapter: Path | str | None = None,
                 text_column: str | None = None, log=print) -> dict:
    """Classify every row of a csv, tsv, jsonl or txt file into a csv or jsonl file (see batch.predict_file)."""
    from .batch import predict_file as classify_file

    summary = classify_file(config, source, target, adapter, text_column)
    _log(log, f"{summary['rows']:,} rows classified -> {target}")
    if summary["blank"]:
        _log(log, f"warning: {summary['blank']:,} rows have no text; their label and probabilities are empty")
    return summary


def export(config: Config, adapter: Path | str | None = None, output: Path | str | None = None, log=print) -> Path:
    """Merge a saved adapter (default: config's) into its base and save a plain transformers model with its tokenizer
    and model card (default: model/lora-merged/), which transformers.pipeline("text-classification") serves."""
    folder = Path(adapter) if adapter is not None else config.paths.adapter
    target = Path(output) if output is not None else config.paths.merged
    trained, labels = _saved_adapter(folder, output_root=config.output_root)
    if trained.quantize_4bit:
        raise ConfigError(f"the adapter at {folder} sits on a 4-bit base, which cannot be merged into full weights: "
                          "train without quantize_4bit to export a merged model")
    tokenizer = load_tokenizer(str(folder), trust_remote_code=trained.trust_remote_code)
    model = load_adapter(folder, trained, labels, merge=True)

    def build(tmp: Path):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        limit_tokenizer(tmp, trained.max_length)
        card.write(_card(trained, labels, folder, merged=True), tmp)

    on_main_process(replace_dir_atomic, build, target)
    _log(log, f"merged model saved in {target} ({baselines.folder_mb(target)} MB)")
    return target


def run_all(config: Config, full_finetune: bool = True, log=print, **sweep_options) -> dict[str, dict]:
    """prepare, baseline, train, evaluate and sweep in order; every record written, by run."""
    check("all", config, targets=sweep_options.get("targets", ()))
    prepare(config, log)
    records = baseline(config, full_finetune, log)
    records["lora"] = train(config, log=log)
    records["lora-reloaded"] = evaluate(config, log)
    records.update(sweep(config, log=log, **sweep_options))
    return records


def _splits(config: Config):
    # The main process prepares (or checks) the data first; the others then find it ready and only read it.
    with processes().main_process_first():
        return data.prepare(config)


def _saved_adapter(folder: Path, **changes) -> tuple[Config, list[str]]:
    """The settings an adapter folder was trained with (changes applied) and its class names, checked against the
    fingerprint that train saved with them."""
    settings, labels = folder / "lora_ft_config.json", folder / "labels.json"
    restore_backup(folder)
    if not (settings.is_file() and labels.is_file()):
        raise ConfigError(f"no saved adapter in {folder}: run the train step first, or pass the folder it saved")
    config, names = Config.load(settings, **changes), json.loads(labels.read_text())
    made = _adapter_fingerprint(folder)
    if made is not None:
        _refuse_mismatch(made, {"settings": _trained_settings(config), "labels": names}, f"the adapter in {folder}",
                         "its files were edited or mixed with another adapter's: save it again with train, or "
                         "copy the whole folder again")
    return config, names


def _adapter_fingerprint(folder: Path) -> dict | None:
    """The fingerprint train saved with an adapter; None for one saved before fingerprints."""
    path = Path(folder) / FINGERPRINT
    return json.loads(path.read_text()) if path.is_file() else None


def _prepared_for(trained: Config, folder: Path) -> DatasetDict:
    """The prepared data an adapter was trained on, read without preparing anything; a ConfigError otherwise."""
    target, wanted = trained.paths.data, trained.data_settings()
    saved = data._saved_settings(target)
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
    made = _adapter_fingerprint(folder)
    if made is not None and made.get("data") != data.digest(splits):
        raise ConfigError(f"the prepared data in {target} has the adapter's settings but other examples than it was "
                          f"trained on (the source changed since): train again on this data")
    return splits


def _last_checkpoint(config: Config) -> Path | None:
    """The last checkpoint in model/checkpoints/ that carries a fingerprint (one without was cut off while saving)."""
    folder = config.paths.checkpoints
    found = [p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.rsplit("-", 1)[-1].isdigit()] \
        if folder.is_dir() else []
    proven = [p for p in found if (p / FINGERPRINT).is_file()]
    if found and not proven:
        raise ConfigError(f"the checkpoints in {folder} carry no fingerprint (saved by an older version, or cut off "
                          "while saving), so nothing proves they belong to this run: train without --resume")
    return max(proven, key=lambda p: int(p.name.rsplit("-", 1)[-1]), default=None)


class _WriteFingerprint(TrainerCallback):
    """Write the run's fingerprint into each checkpoint once the Trainer has saved it: --resume checks it."""

    def __init__(self, made: dict):
        self.made = made

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            write_json_atomic(folder / FINGERPRINT, self.made)


def _trained_settings(config: Config) -> dict:
    """config's settings that shape the trained weights, as JSON values."""
    return {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k not in NOT_TRAINED}


def _refuse_mismatch(saved: dict, current: dict, what: str, fix: str) -> None:
    """A ConfigError naming what differs between a saved fingerprint and the current one (only current's parts).

    "{settings}" in fix becomes the saved values of the differing settings, as key=value words.
    """
    differ, words = [], []
    if "settings" in current:
        there, here = saved.get("settings", {}), current["settings"]
        keys = [k for k in sorted(set(there) | set(here)) if there.get(k) != here.get(k)]
        differ += [f"{k} {there.get(k)!r} there, {here.get(k)!r} now" for k in keys]
        words += [f"{k}={_word(there.get(k))}" for k in keys]
    if "labels" in current and saved.get("labels") != current["labels"]:
        differ.append(f"labels {listed(saved.get('labels') or [])} there, {listed(current['labels'])} now")
    if "data" in current and saved.get("data") != current["data"]:
        differ.append("other prepared examples")
    if differ:
        more = f"; ... {len(differ) - 4} more" if len(differ) > 4 else ""
        fix = fix.replace("{settings}", " ".join(words) or "the same data")
        raise ConfigError(f"{what} was made by another run ({'; '.join(differ[:4])}{more}): {fix}")


def _resume_fix(checkpoint: Path) -> str:
    return ("run train without --resume to start afresh (the checkpoint is replaced), or resume with the settings "
            f"that made it: train --resume {{settings}} (all are in {checkpoint / FINGERPRINT})")


def _word(value) -> str:
    """A setting's value as the CLI reads it."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _write_record(record: dict, config: Config, log) -> None:
    on_main_process(results.write, record, config.paths.results)
    metrics = record["metrics"]
    _log(log, f"{record['run']}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['f1_macro']:.4f} on "
              f"{record['n_examples']:,} {record['split']} examples -> {_path_of(record['run'], config)}")


def _path_of(run: str, config: Config) -> Path:
    return results.path_of(config.paths.results, run, config.seed)


def _predictive(settings: dict) -> dict:
    """A record's settings less those that change no prediction: where the run lives, how it is batched and tracked."""
    return {k: v for k, v in settings.items() if k not in ("output_root", "eval_batch_size", "report_to")}


def _card(config: Config, labels: list[str], adapter: Path, record: dict | None = None, merged: bool = False):
    """The model card of the adapter in adapter (or of its merged export) from what the run left under config's
    paths: its record (default: results/lora.json when it is this adapter's), the baselines' records beside it, split
    sizes."""
    record = record or card.read(_path_of("lora", config))
    trained = card.read(adapter / "lora_ft_config.json")
    if record is not None and _predictive(record["config"]) != _predictive(results.build_config(Config(**trained))):
        record = None  # another run's
    others = {}
    for run in card.BASELINES:
        other = card.read(_path_of(run, config))
        if record and other and other["labels"] == record["labels"] and other["n_examples"] == record["n_examples"]:
            others[run] = other
    report = card.read(config.paths.data / "report.json")
    sizes = report.get("splits") if report and report.get("labels") == list(labels) else None
    return card.build(config, labels, record, others, sizes, card.read(adapter / "adapter_config.json"), merged)


def _log(log, message: str) -> None:
    if processes().is_main_process:
        log(message)
