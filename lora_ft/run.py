"""The one run: settings and splits in, a trained model and its test record out. Every trained run of the project
(train step, full fine-tuning, same-budget runs, sweep, recipes, curves, seeds) goes through train_and_score; what
differs between them is data (which adapters, how often to validate, where to save), never a second loop."""

from __future__ import annotations

import platform
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from peft.utils import ModulesToSaveWrapper
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression

from . import contrastive, data, results, training
from .adapters import save_adapter
from .config import Config
from .errors import ConfigError
from .io import replace_dir_atomic, write_json_atomic
from .measure import folder_mb, measure
from .modeling import (
    add_lora,
    add_lora_from_scratch,
    count_params,
    load_tokenizer,
    model_for_training,
    quiet_transformers,
)
from .provenance import WriteFingerprint
from .training import on_main_process

PACKAGES = ("torch", "transformers", "peft", "datasets", "evaluate")  # their versions go into every record

# How often a run validates (Trainer arguments): by default config.evaluations_per_epoch times per epoch, with a
# checkpoint each time; a fixed budget with nothing to choose needs none, and a same-budget comparison one per epoch
NO_VALIDATION = dict(eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
ONCE_PER_EPOCH = dict(eval_strategy="epoch", save_strategy="epoch")
# notebook 05's same-budget runs, by run name: peft's LoRA and this project's lora.py, trained alike
SAME_BUDGET = {"lora-peft-same-budget": add_lora, "lora-from-scratch": add_lora_from_scratch}


def train_and_score(config: Config, splits, run: str = "lora", *, kind: str = "lora", adapters=add_lora,
                    schedule: dict | None = None, checkpoints: Path | None = None, save_to: Path | None = None,
                    fingerprint: dict | None = None, resume_from: Path | None = None, probe_head: bool = False,
                    per_example: bool = False, probabilities: bool = False, quiet: bool = False, log=None):
    """Train config's model on splits["train"], save it, and score it on splits["test"]: (record, trained model).

    adapters wraps the loaded model (add_lora, add_lora_from_scratch; None trains every weight). schedule overrides
    the validation schedule (NO_VALIDATION, ONCE_PER_EPOCH). checkpoints (each gets fingerprint, for --resume) and
    save_to (the adapter or full model) default to temporary folders. probe_head starts the classifier from a linear
    probe (LP-FT); per_example adds each test example's predicted class and confidence; probabilities adds their
    class probabilities (an array under "probabilities", for the caller to pop); log gets the settings and the
    trainable-weight count; the record keeps config with Config.budget applied. resources: peak memory from loading
    to saving, and the size of what was saved."""
    labels, test = data.labels_of(splits), splits["test"]
    config = config.budget(len(splits["train"]), len(labels))  # what the record keeps (BUDGETED settings resolved)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    with tempfile.TemporaryDirectory() as scratch, measure() as resources:
        model = model_for_training(config, labels)
        if probe_head:
            init_head_from_probe(model, tokenizer, splits["train"], config.seed)
        if adapters is not None:
            model = adapters(model, config)
        params = count_params(model)
        if log is not None:
            log(str(config))
            log(f"training {params['trainable']:,} of {params['total']:,} weights on "
                f"{len(splits['train']):,} examples")
        if config.contrastive:  # few labels: pairs of texts train the adapters, then a probe sets the head
            if resume_from is not None:
                raise ConfigError("a contrastive run (few labels) keeps no checkpoints to resume: run it again "
                                  "without --resume (it takes minutes)")
            info = contrastive.train(model, splits["train"], config, quiet=quiet)
            init_head_from_probe(model, tokenizer, splits["train"], config.seed)
        else:
            output_dir = Path(checkpoints) if checkpoints is not None else Path(scratch) / "checkpoints"
            trainer = training.build_trainer(config, model, tokenizer, splits, output_dir=output_dir,
                                             **(schedule or {}), **(dict(disable_tqdm=True) if quiet else {}))
            if fingerprint is not None:
                trainer.add_callback(WriteFingerprint(fingerprint))
            info = training.train(trainer, None if resume_from is None else str(resume_from))
        target = Path(save_to) if save_to is not None else Path(scratch) / "saved"
        if isinstance(model, PeftModel):
            on_main_process(save_adapter, model, tokenizer, config, labels, target, fingerprint)
        elif adapters is not None:  # lora.py's adapters: what trained (adapters and head), as one safetensors file
            trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            on_main_process(replace_dir_atomic, lambda tmp: save_file(trained, tmp / "adapter.safetensors"), target)
        else:
            on_main_process(replace_dir_atomic, lambda tmp: _save_full(model, tokenizer, config, tmp), target)
        resources["saved_mb"] = folder_mb(target)
    logits = training.predict_logits(model, tokenizer, test, config.eval_batch_size)
    scored = record(run, kind, config, labels, "test", np.array(test["label"]), logits.argmax(-1), params, info,
                    resources)
    chances = torch.from_numpy(logits).float().softmax(-1).numpy()
    if per_example:
        scored["predictions"] = logits.argmax(-1).tolist()
        scored["confidence"] = np.round(chances.max(-1), 4).tolist()
    if probabilities:  # an array, not JSON: the caller takes it out before the record is written
        scored["probabilities"] = chances
    return scored, model


def _save_full(model, tokenizer, config: Config, folder: Path) -> None:
    """A fully fine-tuned model as transformers saves it, with the settings that made it."""
    with quiet_transformers():  # no "Writing model shards" progress widget in the notebook
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json_atomic(folder / "lora_ft_config.json", config.as_json())


def init_head_from_probe(model, tokenizer, train, seed: int, C: float = 1.0) -> None:
    """Copy into the classifier a logistic regression fitted on the pooler output of the training examples, what the
    classifier reads (BERT's pooler, or the mean of the tokens with pooling="mean"): LP-FT's first step (Kumar et al.
    2022) before training, a contrastive run's head after it. C is fixed: with few labels there is no validation
    data to spare."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    head, encoder = getattr(base, "classifier", None), base.base_model
    if isinstance(head, ModulesToSaveWrapper):  # under peft: the head's trained copy
        head = head.modules_to_save[model.active_adapter]
    if not isinstance(head, torch.nn.Linear) or getattr(encoder, "pooler", None) is None:
        raise ConfigError(f"a head started from a linear probe needs a BERT-style head (one linear layer on the "
                          f"pooler or the mean of the tokens); {model.config.model_type} has another: use lora-small, "
                          "or contrastive=false")
    was_training = model.training
    model.eval()
    features = training.embed(encoder, tokenizer, train, pooling="pooler")
    probe = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(features, np.asarray(train["label"]))
    set_head(head, probe)
    model.train(was_training)


def set_head(head: torch.nn.Linear, probe: LogisticRegression) -> None:
    """Copy a fitted logistic regression into a classifier layer: the same logits' argmax as probe.predict."""
    coef, intercept = probe.coef_, probe.intercept_
    if coef.shape[0] == 1:  # binary: scikit-learn fits one row (logit of class 1); the head has two
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(intercept, dtype=head.bias.dtype))


def record(run: str, kind: str, config: Config, labels: list[str], split: str, references, predictions,
           params: dict, train: dict | None = None, resources: dict | None = None) -> dict:
    """A results record (lora_ft.results' contract) for predictions on one split; train is the training section of
    a trained run, resources what the run cost ("peak_memory_mb", "saved_mb", see measure.measure)."""
    scores = training.score(references, predictions, labels)
    made = {"run": run, "kind": kind, "model": config.model, "dataset": config.dataset, "split": split,
            "n_examples": int(len(references)), "labels": list(labels),
            "metrics": {name: scores[name] for name in results.REQUIRED_METRICS},
            "confusion_matrix": scores["confusion_matrix"], "params": params, "config": config.as_json(),
            "meta": meta(config)}
    optional = {"train": train, "resources": resources}  # left out, not null, when a run has none
    return {**made, **{key: value for key, value in optional.items() if value is not None}}


def meta(config: Config) -> dict:
    """Where and with what a record was made: small mode, seed, package versions, device, time."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    return {"smoke": config.smoke, "seed": config.seed, "versions": versions, "device": device,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
