"""Learning curves (notebook 07): the methods' settings, the draws, SetFit's training, and the tables and takeaways
read from the records; the grid and its runs are experiments.learning_curves'. A point (method, n per class, draw)
trains on exactly n examples of each class drawn with the draw's seed (data.sample_per_class); every method sees the
same draws, so methods are compared draw by draw (stats.paired)."""

from __future__ import annotations

import importlib.util
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import data, stats
from .config import DEFAULT_SEED, FULL_FINETUNE_LEARNING_RATE, LEARNING_RATE, ROOT, TARGET_SETS, Config
from .errors import ConfigError
from .grids import CURVE_METHODS as METHODS
from .grids import LORA_RECIPES, speaks_for_lora
from .modeling import resolve_model
from .run import record

PER_CLASS = (8, 32, 128, 512, None)  # examples per class; None: the whole train split ("all")
HEADLINE = ("lora", "full-finetune", "linear-probe", "tfidf-logreg")  # at "all", reused from results/<run>.json

# Each method's settings on top of the prepared data's ("lora" is notebook 03). lora-small: every linear layer
# adapted (notebook 06's best), a fixed number of steps (2 epochs of 24 examples are 2 steps), no early stopping
# (the recipes compared with the default keep to the Trainer's steps at every n: contrastive=False)
LORA_SMALL = dict(target_modules=TARGET_SETS["all-linear"], learning_rate=LEARNING_RATE, batch_size=16, warmup=0.1,
                  early_stopping_patience=0, contrastive=False)
SETTINGS = {
    "lora": {},  # contrastive below CONTRASTIVE_BELOW per class (Config.budget)
    # the default's Trainer recipe with the head on the mean of the token vectors (Config.pooling)
    "lora-mean": {"pooling": "mean", "contrastive": False},
    "lora-small": LORA_SMALL,
    # LP-FT: lora-small with the head started from a linear probe (run.init_head_from_probe)
    "lora-lpft": LORA_SMALL,
    "setfit": dict(batch_size=16, epochs=1.0, learning_rate=2e-5),  # the SetFit paper's: pairs of 16, 1 epoch
    "full-finetune": dict(learning_rate=FULL_FINETUNE_LEARNING_RATE, contrastive=False),  # notebook 02's
    "linear-probe": {},
    "tfidf-logreg": {},
}
TRAINED = ("lora", "lora-mean", "lora-small", "lora-lpft", "full-finetune")  # by the Trainer, so by the budget rule
FIXED_STEPS = ("lora-small", "lora-lpft")  # LoRA recipes that train a fixed number of steps, without validation
LORA_SMALL_STEPS = 100  # lora-small trains max(this, 2 epochs) optimizer steps: ~15 s at any n on 2 CPU cores
SETFIT_RECIPE = {"num_iterations": 20, "max_steps": 1000}  # pairs per sentence and iteration; cap on body steps
SETFIT_SMOKE_STEPS = 2  # body steps in small mode (CI): enough to run every phase
# The largest n each method runs at on CPU, and why (None in PER_CLASS, "all", is above every cap)
MAX_PER_CLASS = {
    "setfit": (128, "a draw takes about 16 CPU minutes there (960 body steps), and at 512 the "
               "recipe's 1,000-step cap would train a quarter of its pairs"),
    "lora-mean": (512, "the default's head on the mean of the tokens: level with the default up to 512 per "
                  "class on the tweets and behind it on emotion at 64 (docs/data-efficiency.md), so the default "
                  "keeps the pooler; at 'all' a draw would cost about 10 CPU minutes (open)"),
    "lora-lpft": (512, "LP-FT differs from lora-small only in the head's starting point, which "
                  "100 steps already forget (it trailed lora-small at every n up to 512); at 'all' (3,800 steps) it "
                  "would cost 17 CPU minutes a draw to repeat lora-small"),
}


def draw_count(n: int | None) -> int:
    """Training draws per point: 5 up to 32 per class, where the draw moves scores most, 3 above and at "all"."""
    return 5 if n is not None and n <= 32 else 3


def draw_seeds(n: int | None, draws: int | None = None) -> tuple[int, ...]:
    """The seeds of n's draws: 42 (the notebooks' seed) first, then 43, 44, ..."""
    return tuple(DEFAULT_SEED + i for i in range(draws or draw_count(n)))


def _show(n) -> str:
    return "all" if n is None else str(n)


def run_name(method: str, n: int | None) -> str:
    return f"curve-{method}-n{_show(n)}"


def parse(run: str) -> tuple[str, int | None]:
    """(method, n per class) of a run name; n None is "all"."""
    method, n = re.fullmatch(r"curve-(.+)-n(\d+|all)", run).groups()
    return method, None if n == "all" else int(n)


def check_methods(methods) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}: choose from {', '.join(METHODS)}")
    if "setfit" in methods and importlib.util.find_spec("setfit") is None:
        raise ConfigError("method 'setfit' needs the setfit package, which is not installed: "
                          "pip install 'setfit>=1.1', or leave setfit out of the methods")


def above_cap(method: str, n: int | None, log=print) -> bool:
    """Whether n per class is above method's cap (MAX_PER_CLASS; "all" is above every cap), said in one line."""
    if method not in MAX_PER_CLASS or (n is not None and n <= MAX_PER_CLASS[method][0]):
        return False
    cap, why = MAX_PER_CLASS[method]
    log(f"{run_name(method, n)}: skipped, {method} runs up to {cap} per class: {why}")
    return True


def changes(config: Config, method: str, n: int | None, classes: int, train_examples: int) -> dict:
    """The settings a point changes: the method's, train_size, and the fixed-step recipes' steps as epochs (the
    budget rule resolves the rest: experiments.curve_grid)."""
    size = train_examples if n is None else n * classes
    found = dict(SETTINGS[method], train_size=None if n is None else size)
    if method in FIXED_STEPS:
        found["epochs"] = max(LORA_SMALL_STEPS, math.ceil(2 * size / found["batch_size"])) * found["batch_size"] / size
    return found


def setfit_recipe(config: Config) -> dict:
    """SetFit's settings outside Config, which its records keep: SETFIT_RECIPE, with fewer steps in small mode."""
    return {**SETFIT_RECIPE, "max_steps": SETFIT_SMOKE_STEPS} if config.smoke else dict(SETFIT_RECIPE)


def train_setfit(splits, config: Config) -> dict:
    """SetFit on the same body: contrastive fine-tuning on sentence pairs, then a logistic regression head."""
    check_methods(("setfit",))
    from setfit import SetFitModel, Trainer, TrainingArguments  # optional dependency: checked just above

    labels, test, train = data.labels_of(splits), splits["test"], splits["train"].select_columns(["text", "label"])
    recipe = setfit_recipe(config)
    pairs = 2 * recipe["num_iterations"] * len(train)  # a positive and a negative pair per sentence and iteration
    steps = min(math.ceil(pairs / config.batch_size), recipe["max_steps"])  # a max_steps above one epoch repeats it
    model = SetFitModel.from_pretrained(resolve_model(config.model))
    args = TrainingArguments(
        output_dir=str(config.paths.model / "setfit"), batch_size=config.batch_size, num_epochs=int(config.epochs),
        num_iterations=recipe["num_iterations"], max_steps=steps,
        body_learning_rate=config.learning_rate, max_length=config.max_length, seed=config.seed,
        report_to="none", show_progress_bar=False, save_strategy="no", logging_strategy="no")
    # a callable metric: a metric name makes setfit call evaluate.load, which needs the network
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      metric=lambda predicted, references: {"accuracy": float(np.mean(
                          np.asarray(predicted) == np.asarray(references)))})
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    predictions = np.asarray(model.predict(test["text"], batch_size=config.eval_batch_size, as_numpy=True))
    pairs = min(pairs, steps * config.batch_size)
    info = {"seconds": round(seconds, 1), "examples_per_second": round(pairs / seconds, 2),  # sentence pairs
            "epochs": config.epochs, "pairs": pairs, "steps": steps, "history": []}
    body = sum(p.numel() for p in model.model_body.parameters())
    head = int(model.model_head.coef_.size + model.model_head.intercept_.size)
    made = record("setfit", "setfit", config, labels, "test", np.array(test["label"]), predictions,
                  {"trainable": body + head, "total": body + head}, info)
    made["recipe"] = recipe
    return made


def points(found: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per draw of each point (found: records by run): x is training examples per class (a mean at "all")."""
    rows = []
    for run, made_over_draws in found.items():
        method, n = parse(run)
        for made in made_over_draws:
            rows.append({"method": method, "per_class": n, "seed": made["meta"]["seed"],
                         "x": made["curve"]["train_examples"] / len(made["labels"]),
                         "accuracy": made["metrics"]["accuracy"], "f1_macro": made["metrics"]["f1_macro"],
                         "seconds": made["train"]["seconds"],
                         "examples_per_second": made["train"]["examples_per_second"]})
    return pd.DataFrame(rows)


def table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Mean +- std over the draws of accuracy and macro-F1, and the mean training time, per method and n."""
    rows = []
    for run, summary in summaries.items():
        method, n = parse(run)
        train = summary.get("train", {})
        rows.append({"method": method, "per class": "all" if n is None else n, "draws": summary["n"],
                     "accuracy": stats.mean_std(summary["metrics"]["accuracy"]),
                     "f1_macro": stats.mean_std(summary["metrics"]["f1_macro"]),
                     "mean train time (s)": round(train["seconds"]["mean"], 1) if "seconds" in train else None,
                     "examples/s": round(train["examples_per_second"]["mean"], 1)
                     if "examples_per_second" in train else None,
                     "_order": (METHODS.index(method), math.inf if n is None else n)})
    frame = pd.DataFrame(rows)
    return frame.sort_values("_order").drop(columns="_order").reset_index(drop=True) if rows else frame


def takeaways(drawn: pd.DataFrame, metric: str = "accuracy") -> list[str]:
    """Sentences from each draw's scores (points): who leads at each n; SetFit against LoRA; where TF-IDF is within a
    point of the best. Which method to use is report_curves.curves_recommendation's, the one rule."""
    scores = {key: dict(zip(group["seed"], group[metric]))
              for key, group in drawn.groupby(["method", drawn["per_class"].fillna(-1)])}
    scores = {(m, None if n == -1 else int(n)): s for (m, n), s in scores.items()}
    means = {key: float(np.mean(list(s.values()))) for key, s in scores.items()}
    grid = sorted({n for _, n in means}, key=lambda n: math.inf if n is None else n)

    def paired(a, b, n) -> stats.Paired:
        return stats.paired(scores[(a, n)], scores[(b, n)], a, b, metric)

    lines, leaders, said = [], {}, set()
    for n in grid:
        here = sorted((m for m, k in means if k == n), key=lambda m: -means[(m, n)])
        leaders[n] = here[0]
        if len(here) > 1:
            said.add((n, frozenset(here[:2])))
            lines.append(f"n = {_show(n)} per class: {here[0]} leads with {means[(here[0], n)]:.4f}; "
                         f"{paired(here[0], here[1], n)}.")
    for n in grid:  # the LoRA recipe that speaks for LoRA, by the one rule (grids.speaks_for_lora)
        ran = sorted((m for m in LORA_RECIPES if (m, n) in means), key=lambda m: -means[(m, n)])
        best = speaks_for_lora(ran, lambda a, b: paired(a, b, n)) if ran else None
        if ("setfit", n) in means and best and (n, frozenset(("setfit", best))) not in said:
            lines.append(f"n = {_show(n)} per class, SetFit against LoRA ({best}): {paired('setfit', best, n)}.")
    if any(m == "tfidf-logreg" for m, _ in means):
        close = [n for n in grid if ("tfidf-logreg", n) in means and
                 max(means[(m, k)] for m, k in means if k == n) - means[("tfidf-logreg", n)] <= 0.01]
        lines.append(f"TF-IDF + logistic regression is within 1 point of the best at n = "
                     f"{', '.join(map(_show, close))} per class." if close else
                     "TF-IDF + logistic regression is more than 1 point behind the best at every n.")
    return lines


# The paired comparisons docs/data-efficiency.md quotes between PAIRED_MARKERS: (folder under results/, n, a, b)
QUOTED = (
    ("curves", 8, "linear-probe", "setfit"), ("curves", 8, "linear-probe", "lora-small"),
    ("curves", 8, "setfit", "lora-small"), ("curves", 32, "setfit", "lora-small"),
    ("curves", 32, "linear-probe", "setfit"), ("curves", 128, "lora-small", "setfit"),
    ("curves", 128, "lora-small", "linear-probe"), ("curves", 512, "lora-small", "linear-probe"),
    *(("curves", n, "lora-small", "lora") for n in PER_CLASS),
    *(("curves", n, "lora-lpft", "lora-small") for n in PER_CLASS[:-1]),
    ("curves", 512, "full-finetune", "lora"), ("curves", None, "full-finetune", "lora"),
    ("curves", 512, "tfidf-logreg", "linear-probe"),
    *(("curves", n, "lora", "setfit") for n in (8, 32, 128)), ("curves", 8, "full-finetune", "lora"),
    ("public/setfit-emotion", 8, "setfit", "lora-small"), ("public/setfit-emotion", 64, "lora-small", "setfit"),
    ("public/setfit-emotion", 8, "lora", "setfit"), ("public/setfit-emotion", 64, "lora", "setfit"),
    ("public/setfit-emotion", 64, "lora", "lora-small"), ("public/setfit-emotion", 8, "lora", "lora-small"),
    # the head on the mean of the token vectors (pooling="mean") against the pooler's, SetFit and the probe
    *(("curves", n, "lora-mean", "lora") for n in PER_CLASS[:-1]),
    *(("curves", n, "lora-mean", "setfit") for n in (8, 32, 128)),
    *(("curves", n, "lora-mean", "linear-probe") for n in (8, 32)),
    *(("public/setfit-emotion", n, "lora-mean", m) for n in (8, 64) for m in ("lora", "setfit")),
)
PAIRED_MARKERS = ("<!-- paired: generated by lora_ft.curves.paired_table(experiments.records) -->",
                  "<!-- paired: end -->")


def paired_rows(records, results_dir: Path = ROOT / "results", metric: str = "accuracy") -> list:
    """(folder, n, stats.Paired) of each QUOTED comparison with records in results_dir (records: experiments')."""
    rows = []
    for where, n, a, b in QUOTED:
        folder = Path(results_dir) / where
        if all((folder / f"{run_name(m, n)}.json").exists() for m in (a, b)):
            scores = [stats.by_seed(records(folder, run_name(m, n)), metric) for m in (a, b)]
            rows.append((where, n, stats.paired(*scores, a, b, metric)))
    return rows


def paired_table(records, results_dir: Path = ROOT / "results", metric: str = "accuracy") -> str:
    """The QUOTED comparisons as a markdown table: difference ± standard error in points, wins, verdict."""
    lines = [f"| data | per class | a vs b | a - b, points of {metric} | a ahead | verdict |",
             "|---|---|---|---|---|---|"]
    for where, n, p in paired_rows(records, results_dir, metric):
        data_set = "emotion" if where.endswith("setfit-emotion") else "tweets"
        lines.append(f"| {data_set} | {_show(n)} | {p.a} vs {p.b} | {p.difference:+.2f} ± {p.standard_error:.2f} | "
                     f"{p.wins} of {p.n} | {p.verdict} |")
    return "\n".join(lines)


def render_doc(text: str, table_text: str) -> str:
    """text with the part between PAIRED_MARKERS replaced by table_text."""
    begin, end = PAIRED_MARKERS
    head, rest = text.split(begin)
    return f"{head}{begin}\n{table_text}\n{end}{rest.split(end)[1]}"
