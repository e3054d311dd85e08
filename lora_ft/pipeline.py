"""The notebooks' steps as functions of a Config: what `python -m lora_ft <step>` runs and notebooks 01 to 03 call,
so both leave the same files. Each step first calls check(), so that a failing step leaves nothing behind
(docs/errors.md). Under torchrun or accelerate launch every process runs each step and only the main one writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from . import baselines, card, data, label_errors, provenance, results, serving, training
from .adapters import load_adapter
from .config import CONTRASTIVE_BELOW, FULL_FINETUNE_LEARNING_RATE, Config
from .errors import ConfigError
from .io import check_writable
from .measure import folder_mb
from .modeling import head_modules, load_tokenizer, lora_targets, model_skeleton, quantization_config
from .run import ONCE_PER_EPOCH, SAME_BUDGET, record, train_and_score
from .training import on_main_process, processes

STEPS_THAT_TRAIN = ("baseline", "train")  # the steps that check model/ and results/ too (prepare: data/ alone)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; checkpoint is the last one this run saved (None before its first)."""

    def __init__(self, checkpoint: Path | None):
        super().__init__()
        self.checkpoint = checkpoint


def check(step: str, config: Config, resume: bool = False) -> Path | None:
    """Check everything step needs that can be known before it writes anything (settings against the model's
    configuration, no weights loaded; writable folders); returns the checkpoint --resume continues, if this run's."""
    training.resolve_precision(config.precision)
    quantization_config(config.quantize_4bit)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    if config.max_length > tokenizer.model_max_length:
        raise ConfigError(f"max_length={config.max_length} is beyond the {tokenizer.model_max_length} tokens model "
                          f"{config.model!r} reads: set max_length to at most {tokenizer.model_max_length}")
    skeleton = model_skeleton(config.model, config.trust_remote_code)
    width = getattr(skeleton.config, "hidden_size", None)
    if width is not None and config.r > width:
        raise ConfigError(f"r={config.r} is more than the {width} dimensions of {config.model!r}'s layers, so the "
                          f"update B A could not be low-rank: set r to at most {width} (e.g. 8)")
    lora_targets(skeleton, config.target_modules)
    head_modules(skeleton, config.modules_to_save)
    paths = config.paths
    for folder in (paths.data, *((paths.model, paths.results) if step in STEPS_THAT_TRAIN else ())):
        check_writable(folder)
    return provenance.resumable_checkpoint(config) if step == "train" and resume else None


def prepare(config: Config, log=print) -> DatasetDict:
    """Load, clean, split and tokenize the data (notebook 01); reused when the saved settings match."""
    check("prepare", config)
    splits = _splits(config)
    sizes = ", ".join(f"{len(splits[name]):,} {name}" for name in data.SPLITS)
    _log(log, f"prepared data in {config.paths.data}: {sizes}; labels {data.labels_of(splits)}")
    return splits


def baseline(config: Config, full_finetune: bool = True, log=print) -> dict[str, dict]:
    """baselines.RUNS' test records (notebook 02), each written when done; full_finetune=False skips the slowest."""
    check("baseline", config)
    splits = _splits(config)
    records = {}
    for run, step in baselines.RUNS.items():
        if full_finetune or run != "full-finetune":
            records[run] = step(splits, config)
            _write_record(records[run], config, log)
    return records


def train(config: Config, resume: bool = False, log=print):
    """Train LoRA adapters (notebook 03) into model/lora-adapter/ with their card, write the record "lora", export
    model/lora-merged/; resume continues this run's last checkpoint. (record, trained model)"""
    checkpoint = check("train", config, resume=resume)
    splits = _splits(config)
    labels = data.labels_of(splits)
    config = config.budget(len(splits["train"]), len(labels))  # what the fingerprint, card and record say was trained
    if advice := few_labels_advice(splits["train"]):
        _log(log, advice)
    made = provenance.fingerprint(config, labels, splits)
    if checkpoint is not None:  # its settings matched; now its classes and data, known once the data is prepared
        provenance.refuse_mismatch(provenance.read_fingerprint(checkpoint), made, f"checkpoint {checkpoint}",
                                   provenance.resume_fix(checkpoint))
        on_main_process(provenance.follow_move, checkpoint)
    if resume:
        _log(log, f"resuming from {checkpoint}" if checkpoint
             else f"no checkpoint in {config.paths.checkpoints}: training from the start")
    try:
        scored, model = train_and_score(config, splits, "lora", checkpoints=config.paths.checkpoints,
                                        save_to=config.paths.adapter, fingerprint=made, resume_from=checkpoint,
                                        log=lambda line: _log(log, line))
    except KeyboardInterrupt:
        last = provenance.last_checkpoint(config)
        ours = last is not None and provenance.read_fingerprint(last) == made
        raise Interrupted(last if ours else None) from None
    on_main_process(card.write, card.for_adapter(config, labels, config.paths.adapter, scored), config.paths.adapter)
    scored["resources"]["saved_mb"] = folder_mb(config.paths.adapter)  # the record's, card included
    _log(log, f"adapter saved in {config.paths.adapter} ({scored['resources']['saved_mb']} MB)")
    _write_record(scored, config, log)
    if config.pooling == "mean" or config.quantize_4bit:  # serving.export says why
        _log(log, "no merged model: " + ("a 4-bit base cannot be merged into full weights" if config.quantize_4bit
                                         else "transformers' BERT head reads the pooler, not the mean of the tokens")
             + "; predict serves the adapter (merged in memory)")
        if config.paths.merged.is_dir():  # an earlier run's export, which no longer matches the adapter
            on_main_process(shutil.rmtree, config.paths.merged)
            _log(log, f"removed {config.paths.merged}: the merged model of an earlier run, not of this adapter")
    else:
        serving.export(config, log=log)
    return scored, model


# Below this many training examples in a class, notebook 07 found the sentence-embedding methods (a linear probe on
# the frozen encoder, SetFit) close to LoRA on the tweets (8 and 32 per class; level at 128: docs/data-efficiency.md)
FEW_PER_CLASS = 128


def few_labels_advice(train) -> str | None:
    """What the run does and what else to try when train's smallest class is under FEW_PER_CLASS, else None."""
    fewest = int(np.bincount(train["label"], minlength=train.features["label"].num_classes).min())
    if fewest >= FEW_PER_CLASS:
        return None
    return (f"few labels: the smallest class has {fewest} training examples. Below {CONTRASTIVE_BELOW} per class (on "
            "average) the default trains its adapters on pairs of texts, as SetFit trains its body, then sets the "
            "head from a logistic regression (contrastive=false keeps the Trainer's recipe). Below "
            f"{FEW_PER_CLASS} per class notebook 07 compared LoRA with SetFit and a logistic regression on the frozen "
            "encoder's mean-pooled embeddings (a linear probe), which are close at that size (docs/data-efficiency.md "
            "has the verdicts): `python -m lora_ft baseline --no-full-finetune` fits the probe and scores it on this "
            "test split beside LoRA (results/linear-probe.json), and `python -m lora_ft predict --adapter "
            "model/linear-probe` serves it as it serves an adapter; `python -m lora_ft curves --methods "
            "lora,setfit,linear-probe` compares the three on draws of this data (docs/data-efficiency.md).")


def same_budget(config: Config, splits, log=print) -> dict[str, tuple]:
    """peft's LoRA and lora.py's (notebook 05) trained alike on config.train_size stratified training examples,
    validated once per epoch, tested and written: (record, trained model) by run."""
    splits = DatasetDict({**splits, "train": data.subsample(splits["train"], config.train_size, config.split_seed)})
    trained = {}
    for run, adapters in SAME_BUDGET.items():
        scored, model = train_and_score(config, splits, run, adapters=adapters, schedule=ONCE_PER_EPOCH, quiet=True)
        _write_record(scored, config, log)
        trained[run] = (scored, model)
    return trained


def task(name: str, config: Config, results_dir: Path, log=print) -> dict[str, dict]:
    """One task of notebook 09 in config's output root: LoRA (train) and full fine-tuning, their records written as
    results_dir/<name>-lora.json and <name>-full-finetune.json; each reused while its record and model match."""
    full = config.replace(learning_rate=FULL_FINETUNE_LEARNING_RATE, loraplus_lr_ratio=None,
                          contrastive=False)  # as full_finetune's
    found, splits = {}, _splits(config)
    for kind, made, folder in (("lora", config, config.paths.adapter),
                               ("full-finetune", full, config.paths.model / "full-finetune")):
        path = results.path_of(results_dir, f"{name}-{kind}")
        # the records keep the budget rule's settings
        wanted = results.config_settings(made.budget(len(splits["train"]), len(data.labels_of(splits))))
        scored = results.finished(path, wanted) if folder.is_dir() else None
        if scored is None:
            scored = train(config, log=log)[0] if kind == "lora" else baselines.full_finetune(splits, config)
            scored = {**scored, "run": f"{name}-{kind}"}
            on_main_process(results.write, scored, results_dir)
        found[kind] = scored
    return found


def find_label_errors(config: Config, method: str = "probe", folds: int = label_errors.FOLDS,
                      output: Path | None = None, log=print):
    """The training split's suspected label errors, most doubtful first (label_errors: k-fold out-of-sample
    probabilities by method, then cleanlab), written to output (default results/label-errors.csv)."""
    label_errors.cleanlab()  # missing: say so before the cross-validation, not after it
    if method not in label_errors.METHODS:
        raise ConfigError(f"unknown method {method!r}: choose from {label_errors.METHODS}")
    splits = _splits(config)
    train = splits["train"]
    label_errors.check_folds(train["label"], data.labels_of(splits), folds)
    probs = label_errors.out_of_sample(train, config, method, folds, log=lambda line: _log(log, line))
    found = label_errors.suspects(train, probs)
    target = Path(output) if output is not None else config.paths.results / "label-errors.csv"
    on_main_process(label_errors.write, found, target)
    _log(log, f"{len(found):,} of {len(train):,} training labels suspected ({method}, {folds} folds) -> {target}")
    return found


def evaluate(config: Config, log=print) -> dict:
    """Score the saved adapter, reloaded into a fresh base model, on the test split it was trained with (never
    prepared again): results/lora-reloaded.json, the only file written. Settings are the adapter's (config gives
    output_root and eval_batch_size); training, params and resources come from its record "lora"."""
    folder = config.paths.adapter
    trained, labels = provenance.saved_adapter(folder, output_root=config.output_root,
                                               eval_batch_size=config.eval_batch_size)
    check_writable(trained.paths.results)
    path = provenance.record_path("lora", trained)
    trained_run = results.read(path) if path.exists() else None
    if trained_run is None or not provenance.same_training(trained_run["config"], trained.as_json()):
        raise ConfigError(f"{path} is missing or is not the record of the adapter in {folder}: "
                          "run the train step again, which writes both")
    test = provenance.prepared_for(trained, folder)["test"]
    tokenizer = load_tokenizer(str(folder), trust_remote_code=trained.trust_remote_code)
    model = load_adapter(folder, trained, labels)
    logits = training.predict_logits(model, tokenizer, test, trained.eval_batch_size)
    scored = record("lora-reloaded", "lora", trained, labels, "test", np.array(test["label"]), logits.argmax(-1),
                    trained_run["params"], trained_run["train"], trained_run.get("resources"))
    _write_record(scored, trained, log)
    same = scored["confusion_matrix"] == trained_run["confusion_matrix"]
    _log(log, f"same confusion matrix as the record of the trained model: {'yes' if same else 'NO'}")
    return scored


def _splits(config: Config):
    # The main process prepares (or checks) the data first; the others then find it ready and only read it.
    with processes().main_process_first():
        return data.prepare(config)


def _write_record(scored: dict, config: Config, log) -> None:
    on_main_process(results.write, scored, config.paths.results)
    metrics = scored["metrics"]
    where = provenance.record_path(scored["run"], config)
    _log(log, f"{scored['run']}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['f1_macro']:.4f} on "
              f"{scored['n_examples']:,} {scored['split']} examples -> {where}")


def _log(log, message: str) -> None:
    if processes().is_main_process:
        log(message)
