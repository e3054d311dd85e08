"""Train with the transformers Trainer and predict: the one loop every notebook and test uses."""

from __future__ import annotations

import json
import math
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import evaluate
import numpy as np
import torch
import transformers
from accelerate import PartialState
from accelerate.utils import extract_model_from_parallel, parse_flag_from_env
from peft.optimizers import create_loraplus_optimizer
from peft.tuners.lora import LoraLayer
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK as KNOWN
from transformers.integrations.integration_utils import get_available_reporting_integrations
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.utils import is_torch_bf16_gpu_available

from .config import PAD_TO_MULTIPLE_OF, Config
from .data import subsample
from .errors import ConfigError

METRIC_PATH = Path(__file__).parent / "metrics" / "classification_report.py"
SUMMARY = ("accuracy", "f1_macro", "precision_macro", "recall_macro")


@lru_cache(maxsize=1)
def classification_metric():
    """The project's evaluate metric, loaded from its file (no hub access)."""
    return evaluate.load(str(METRIC_PATH))


def score(references, predictions, labels: list[str]) -> dict:
    return classification_metric().compute(predictions=predictions, references=references, labels=labels)


def _compute_metrics(labels):
    def compute(prediction) -> dict:
        scores = score(prediction.label_ids, np.argmax(prediction.predictions, axis=-1), labels)
        return {name: scores[name] for name in SUMMARY}

    return compute


def resolve_precision(precision: str) -> str:
    """The precision to train in: "auto" is bf16 if bf16_native, else fp16 on a GPU, fp32 on CPU; others checked."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if bf16_native() else "fp16" if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("precision='fp16' needs a CUDA GPU and this machine has none: "
                          f"set precision='auto' ({resolve_precision('auto')} here) or 'fp32'")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigError(f"precision='bf16' needs a GPU with bf16 support and {torch.cuda.get_device_name()} "
                          "has none: set precision='auto' (fp16 here) or 'fp16'")
    return precision


def bf16_native() -> bool:
    """Whether bf16 runs in hardware (a CUDA GPU with bf16, a CPU with AVX-512 bf16 or AMX); emulated it is slower."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch.cpu API, hence the fallback
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def training_arguments(config: Config, output_dir: Path, examples: int, **overrides) -> TrainingArguments:
    """The Trainer's arguments for config on a training split of examples, with Config.budget applied."""
    config = config.budget(examples)
    precision = resolve_precision(config.precision)
    steps = math.ceil(config.epochs * math.ceil(examples / config.batch_size))
    # evaluations_per_epoch times per epoch, but no more often than every 5 steps where min_steps raised the epochs
    validations = min(config.evaluations_per_epoch * config.epochs, max(config.evaluations_per_epoch, steps / 5))
    args = dict(
        output_dir=str(output_dir), learning_rate=config.learning_rate, num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.eval_batch_size,
        weight_decay=config.weight_decay, warmup_steps=config.warmup,  # a float below 1 is a share of all steps
        train_sampling_strategy="group_by_length",  # batches of similar length: less padding, faster steps
        **_schedule(validations),
        save_total_limit=1,  # the latest checkpoint (to resume from), and the best one where it is restored
        # early stopping restores the best checkpoint; without it the final weights are tested
        load_best_model_at_end=config.early_stopping_patience > 0, metric_for_best_model="f1_macro", seed=config.seed,
        report_to=trackers(config.report_to), torch_compile=config.compile,
        dataloader_pin_memory=False,  # pinning only helps a GPU
        bf16=precision == "bf16", fp16=precision == "fp16",
        # transformers runs bf16 without an accelerator that has it only as CPU autocast, and only when told to
        use_cpu=precision == "bf16" and not is_torch_bf16_gpu_available(),
    )
    args.update(overrides)
    return TrainingArguments(**args)


def trackers(report_to: str) -> list[str]:
    """The experiment trackers named in report_to ("none", or names such as "tensorboard,mlflow"), each installed."""
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if names in (["none"], ["all"]):
        return names
    unknown = [name for name in names if name not in KNOWN]
    if unknown:
        raise ConfigError(f"report_to names unknown tracker(s) {unknown}: choose from {sorted(KNOWN)}, or none")
    missing = [name for name in names if name not in get_available_reporting_integrations()]
    if missing:
        raise ConfigError(f"report_to names {missing}, not installed here: pip install {' '.join(missing)}, "
                          "or set report_to=none")
    return names


def _schedule(evaluations: float) -> dict:
    """Validate and checkpoint (the same steps, so the best can be restored) evaluations times per run, as shares of
    its steps, and log the loss twice as often; at most one validation: once per epoch."""
    if evaluations <= 1:
        return dict(eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch")
    return dict(eval_strategy="steps", save_strategy="steps", logging_strategy="steps", eval_steps=1 / evaluations,
                save_steps=1 / evaluations, logging_steps=1 / (2 * evaluations))


def release(model) -> None:
    """Undo a Trainer's accelerate preparation of model: the autocast wrapper on its forward, and the mark that makes
    the next Trainer skip preparing it, and so train it without mixed precision (docs/speed.md)."""
    extract_model_from_parallel(model, keep_fp32_wrapper=False)  # restores the original forward
    vars(model).pop("_is_accelerate_prepared", None)


def resolve_attention(attention: str, precision: str) -> str | None:
    """attention, or for "auto": "eager" when training in bf16 on a CPU, where the fused kernel is slower
    (docs/speed.md), else None (the model's own)."""
    if attention != "auto":
        return attention
    return "eager" if not torch.cuda.is_available() and resolve_precision(precision) == "bf16" else None


def attention_of(model) -> str:
    return model.config._attn_implementation


def set_attention(model, attention: str, strict: bool = True) -> None:
    """Switch model's attention implementation in place; a model that cannot switch keeps its own, or when strict
    is refused with a ConfigError."""
    if attention == attention_of(model):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not base._can_set_attn_implementation():
        if strict:
            raise ConfigError(f"attention={attention!r}: {type(base).__name__} cannot switch its attention "
                              "implementation: set attention=auto (its own)")
        return
    base.set_attn_implementation(attention)


class FullPrecisionAfterTraining(TrainerCallback):
    """Release the model when training ends: it then predicts like its saved adapter reloaded into a fresh base."""

    def __init__(self, attention: str):
        self.attention = attention  # the implementation the model was loaded with

    def on_train_end(self, args, state, control, model=None, **kwargs):
        release(model)
        set_attention(model, self.attention)  # nothing to do where training kept it


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped order, shuffled by a generator seeded with seed + epoch rather than the global
    random state, which a run resumed mid-epoch reaches in another state than the uninterrupted run."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls it before each epoch, resumed ones included
        self.generator = torch.Generator().manual_seed(self.seed + epoch)


class ResumableTrainer(Trainer):
    """A Trainer whose run resumed mid-epoch trains on the batches, and to the weights, of the uninterrupted run, and
    whose validations cast the weights once (weights_as).

    Under autocast, LoRA layers leave their input's dtype to autocast (input_casts_off)."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, self.args.seed)
        return sampler

    def _half(self) -> torch.dtype | None:
        """The dtype autocast computes in, None without autocast."""
        return torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None

    def train(self, *args, **kwargs):
        with input_casts_off(self.model, active=self._half() is not None):
            return super().train(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        half = self._half()
        with weights_as(self.model, half), input_casts_off(self.model, active=half is not None):
            return super().evaluate(*args, **kwargs)


@contextmanager
def input_casts_off(model, active: bool = True):
    """Inside, when active (under autocast): plain LoRA layers do not cast their input to the adapters' fp32, which
    autocast casts straight back to half precision for the adapters' products. The round trip, a copy of each bf16
    input in the forward pass and of its gradient in the backward, changes no number (tests/test_lora.py) and only
    costs time (docs/speed.md). peft's own switch, peft.helpers.disable_input_dtype_casting, fails on methods whose
    layers lack it (IA3, VeRA); DoRA and the other LoRA variants keep their casts."""
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.lora_variant] if active else []
    before = [m.cast_input_dtype_enabled for m in layers]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for layer, enabled in zip(layers, before):
            layer.cast_input_dtype_enabled = enabled


@contextmanager
def weights_as(model, dtype: torch.dtype | None):
    """Inside: model's fp32 linear weights held as dtype copies, for autocast to dtype. Autocast casts every weight on
    every forward pass; while nothing trains (a validation) the same casts made once give the same numbers, in less
    time (benchmarks/validation_cost.py, docs/speed.md). Not with DoRA, whose weight norm reads the weight itself."""
    swapped = [] if dtype is None or any(getattr(m, "lora_magnitude_vector", None) for m in model.modules()) else [
        (m, m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32]
    for module, weight in swapped:
        module.weight = torch.nn.Parameter(weight.detach().to(dtype), requires_grad=False)
    try:
        yield
    finally:
        for module, weight in swapped:
            module.weight = weight


def build_trainer(config: Config, model, tokenizer, splits, output_dir: Path | None = None, **overrides) -> Trainer:
    """A Trainer for config; overrides set TrainingArguments fields (e.g. eval_strategy="no", disable_tqdm=True)."""
    labels = splits["train"].features["label"].names
    args = training_arguments(config, output_dir or config.paths.checkpoints, len(splits["train"]), **overrides)
    # scored at every validation: a fixed sample keeps ~20 validations per run cheap (config.validation_sample)
    validation = subsample(splits["validation"], config.validation_sample, config.split_seed)
    callbacks = [FullPrecisionAfterTraining(attention_of(model))]  # before switching: what to restore
    attention = resolve_attention(config.attention, config.precision)
    if attention is not None:
        set_attention(model, attention, strict=config.attention != "auto")
    if config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
    trainer = ResumableTrainer(
        model=model, args=args, processing_class=tokenizer, compute_metrics=_compute_metrics(labels),
        train_dataset=splits["train"], eval_dataset=validation.select(length_order(validation)), callbacks=callbacks,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=config.pad_to_multiple_of),
        # the Trainer still builds the learning-rate schedule on a given optimizer, and restores both on resume
        optimizers=(loraplus_optimizer(model, args, config.loraplus_lr_ratio), None),
    )
    if trainer.args.disable_tqdm:  # quiet means no progress table and no printed dict per log either
        trainer.remove_callback(PrinterCallback)
    return trainer


def loraplus_optimizer(model, args: TrainingArguments, ratio: float | None) -> torch.optim.Optimizer | None:
    """LoRA+: AdamW as args sets it up, B learning ratio times faster than A; None (the Trainer's own) if no ratio."""
    if ratio is None:
        return None
    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=args.learning_rate, loraplus_lr_ratio=ratio,
                                     loraplus_weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                                     eps=args.adam_epsilon)


def train(trainer: Trainer, resume_from_checkpoint: str | None = None) -> dict:
    """Run training, from a checkpoint folder if given; the results file's train section, timing this call only."""
    first_step = 0
    if resume_from_checkpoint is not None:
        first_step = json.loads((Path(resume_from_checkpoint) / "trainer_state.json").read_text())["global_step"]
    compiled = trainer.args.torch_compile
    graphs = _compiled_graphs() if compiled else 0
    attention = attention_of(trainer.model)  # restored to the loaded one when training ends
    start = time.perf_counter()
    transformers.logging.disable_progress_bar()  # the Trainer's own progress table stays; checkpoint-writing bars go
    try:
        output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except KeyboardInterrupt:
        for callback in trainer.callback_handler.callbacks:  # end the progress bar, so the CLI's line comes last
            if isinstance(callback, ProgressCallback) and callback.training_bar is not None:
                callback.training_bar.close()
        raise
    finally:
        transformers.logging.enable_progress_bar()
    seconds = time.perf_counter() - start
    state = trainer.state
    history = [{k: v for k, v in entry.items() if k != "total_flos"}
               for entry in state.log_history if "loss" in entry or "eval_loss" in entry]
    examples = len(trainer.train_dataset) * state.epoch * (state.global_step - first_step) / max(state.global_step, 1)
    info = {"seconds": round(seconds, 1), "examples_per_second": round(examples / output.metrics["train_runtime"], 2),
            "epochs": state.epoch, "best_epoch": _best_epoch(history, state.best_metric),
            "best_validation_f1_macro": state.best_metric, "attention": attention, "history": history}
    if compiled:  # the first compilation and every recompilation (a new batch shape, evaluation)
        info["compiled_graphs"] = _compiled_graphs() - graphs
    if first_step:
        info["resumed_from_step"] = first_step
    return info


def _compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _best_epoch(history, best):
    if best is None:  # a run without validation has no best (not the first entry, which also lacks a score)
        return None
    return next((entry["epoch"] for entry in history if entry.get("eval_f1_macro") == best), None)


def length_order(dataset) -> np.ndarray:
    """Indices that sort dataset by token count: batches taken in that order pad little, and no score depends on it."""
    return np.argsort([len(ids) for ids in dataset["input_ids"]], kind="stable")


def predict_logits(model, tokenizer, dataset, batch_size: int = 128, by_length: bool = True) -> np.ndarray:
    """Logits for every example of dataset, in its order; by_length batches similar lengths, which pad far less."""
    order = length_order(dataset) if by_length else np.arange(len(dataset))
    if getattr(model, "is_quantized", False) and not hasattr(model, "peft_config"):  # a Trainer refuses this model
        logits = _plain_logits(model, tokenizer, dataset.select(order), batch_size)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size, report_to="none",
                                     dataloader_pin_memory=False, disable_tqdm=True)
            trainer = Trainer(model=model, args=args, processing_class=tokenizer,
                              data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_TO_MULTIPLE_OF))
            try:
                logits = trainer.predict(dataset.select(order)).predictions
            finally:
                release(model)
    restored = np.empty_like(logits)
    restored[order] = logits
    return restored


def embed(encoder, tokenizer, dataset, batch_size: int = 64, pooling: str = "mean") -> np.ndarray:
    """Mean of the last hidden states over the attention mask (how all-MiniLM-L6-v2 was trained), in dataset order;
    pooling="pooler": the encoder's pooler output instead (what a BERT classification head reads)."""
    order = length_order(dataset)  # batches of similar length: little padding
    columns = dataset.select_columns(["input_ids", "attention_mask"])
    device = next(encoder.parameters()).device
    embeddings = np.empty((len(dataset), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            batch = tokenizer.pad(columns[rows.tolist()], pad_to_multiple_of=PAD_TO_MULTIPLE_OF, return_tensors="pt")
            batch = batch.to(device)
            output = encoder(**batch)
            if pooling == "pooler":
                embeddings[rows] = output.pooler_output.float().cpu().numpy()
                continue
            hidden = output.last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            embeddings[rows] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy()
    return embeddings


def _plain_logits(model, tokenizer, dataset, batch_size: int) -> np.ndarray:
    """Logits from plain forward passes: a Trainer refuses a quantized model without adapters (QLoRA's baseline)."""
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_TO_MULTIPLE_OF)
    inputs = dataset.select_columns([c for c in dataset.column_names if c in tokenizer.model_input_names])
    device = next(model.parameters()).device
    model.eval()
    batches = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = collate([inputs[i] for i in range(start, min(start + batch_size, len(inputs)))])
            batches.append(model(**batch.to(device)).logits.float().cpu().numpy())
    return np.concatenate(batches)


def processes():
    """The Trainer's processes; ACCELERATE_USE_CPU (`accelerate launch --cpu`) is passed on, or a torchrun CPU
    process would think it ran alone."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def on_main_process(write, *args) -> None:
    """Run a write on the main process only, then hold every process until it is on disk."""
    state = processes()
    if state.is_main_process:
        write(*args)
    state.wait_for_everyone()
