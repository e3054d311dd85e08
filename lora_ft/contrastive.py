"""Few labels (Config.contrastive): the adapters trained on pairs of texts, as SetFit trains its body (Tunstall et al.
2022; the setfit package draws the pairs and trains), in place of the Trainer's steps on the classification loss.
The model's encoder, with its adapters, becomes a sentence-transformers body for the pairs phase, so the weights
that train are the ones train_and_score saves; the head is then set from a logistic regression on the mean-pooled
tokens it reads (run.init_head_from_probe). docs/data-efficiency.md has the evidence for the rule that turns it on."""

from __future__ import annotations

import importlib.util
import logging
import math
import tempfile
import time
import warnings

from sklearn.linear_model import LogisticRegression
from transformers import ProgressCallback

from .config import CONTRASTIVE_BELOW, CONTRASTIVE_MAX_STEPS, CONTRASTIVE_PAIRS, Config
from .errors import ConfigError
from .modeling import quiet_transformers, resolve_model


def check_installed() -> None:
    if importlib.util.find_spec("setfit") is None:
        raise ConfigError(f"contrastive training (the default below {CONTRASTIVE_BELOW} examples per class) draws "
                          "its pairs of texts with the setfit package, which is not installed: pip install "
                          "'setfit>=1.1', or set contrastive=false for the Trainer's recipe")


def plan(examples: int, config: Config) -> dict:
    """The pairs phase's size: SetFit's iterations (a pair of the same class and one of another per text each),
    CONTRASTIVE_PAIRS pairs per text and epoch, one pass over them in batches of config.batch_size, at most
    CONTRASTIVE_MAX_STEPS steps (small mode: min_steps)."""
    iterations = max(1, round(config.epochs * CONTRASTIVE_PAIRS / 2))
    pairs = 2 * iterations * examples
    cap = config.min_steps if config.smoke else CONTRASTIVE_MAX_STEPS
    steps = min(math.ceil(pairs / config.batch_size), cap)
    return {"iterations": iterations, "pairs": min(pairs, steps * config.batch_size), "steps": steps}


def train(model, train_split, config: Config, quiet: bool = False) -> dict:
    """Train model's adapters (a peft model whose head reads the mean-pooled tokens) on pairs of train_split's texts;
    the record's train section, with the pairs phase's size (plan). The head is left to the caller. quiet: no
    progress bar (the grids')."""
    check_installed()
    from sentence_transformers import SentenceTransformer  # setfit's dependency, as optional as it
    from setfit import SetFitModel, Trainer, TrainingArguments  # optional dependency: checked just above

    try:  # sentence-transformers >= 6 moved them
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer  # (optional, as above)
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer  # (optional, as above)

    size = plan(len(train_split), config)
    encoder = model.get_base_model().base_model  # the adapted encoder the head reads
    with quiet_transformers():  # no loading bar for weights that are replaced at once
        reader = Transformer(resolve_model(config.model), max_seq_length=config.max_length)  # its tokenizer
    if isinstance(getattr(type(reader), "auto_model", None), property):  # >= 6: auto_model reads .model
        reader.model = encoder
    else:
        reader.auto_model = encoder
    if reader.auto_model is not encoder:
        raise ConfigError("this sentence-transformers version keeps its model where lora_ft does not look: install "
                          "the version setfit's requirements name, or set contrastive=false")
    body = SentenceTransformer(modules=[reader, Pooling(encoder.config.hidden_size)], device=str(encoder.device))
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, batch_size=config.batch_size, num_epochs=1, num_iterations=size["iterations"],
            max_steps=size["steps"], body_learning_rate=config.learning_rate, warmup_proportion=config.warmup,
            max_length=config.max_length, seed=config.seed, report_to="none", show_progress_bar=False,
            save_strategy="no", logging_strategy="no", logging_first_step=False)
        trainer = Trainer(model=SetFitModel(model_body=body, model_head=LogisticRegression()), args=args)
        if quiet:
            trainer.st_trainer.remove_callback(ProgressCallback)
        said = logging.getLogger("setfit").level
        start = time.perf_counter()
        with warnings.catch_warnings():  # its data loader asks for pinned memory, which a CPU has none of
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            logging.getLogger("setfit").setLevel(logging.WARNING)  # not its "***** Running training *****"
            try:
                trainer.train_embeddings(list(train_split["text"]), list(train_split["label"]))
            finally:
                logging.getLogger("setfit").setLevel(said)
        seconds = time.perf_counter() - start
    model.eval()
    return {"seconds": round(seconds, 1), "examples_per_second": round(size["pairs"] / seconds, 2),  # pairs
            "epochs": config.epochs, **size, "history": []}
