"""Learning curves: test scores against training examples per class, for LoRA and the methods it competes with.

A point is (method, n examples per class, draw). A draw samples exactly n examples of each class from notebook 01's
train split with its seed (data.sample_per_class) and trains with that same seed; validation and test stay the fixed
splits. Each point is one results record in results/curves/, named as the seeds mechanism names them
(curve-<method>-n<k>.json for the first draw, seed 42; seeds/curve-<method>-n<k>.seed<s>.json for the others), so
seeds.summarize writes each curve point's spread to results/curves/summaries/. A record with the same settings is
skipped: an interrupted run continues where it stopped, and notebook 07 reads what `python -m lora_ft curves` wrote.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import DatasetDict

from . import baselines, data, results, seeds, training
from .config import DEFAULT_SEED, Config
from .errors import ConfigError

METHODS = ("lora", "lora-small", "lora-lpft", "setfit", "full-finetune", "linear-probe", "tfidf-logreg")
PER_CLASS = (8, 32, 128, 512, None)  # examples per class; None: the whole train split ("all")
HEADLINE = ("lora", "full-finetune", "linear-probe", "tfidf-logreg")  # at "all", reused from results/<run>.json

# Each method's settings on top of the prepared data's (which hold the project's recipe: "lora" is notebook 03).
ALL_LINEAR = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
LORA_SMALL = dict(target_modules=ALL_LINEAR, learning_rate=1e-3, batch_size=16, warmup=0.1, early_stopping_patience=0)
SETTINGS = {
    "lora": {},
    # small data: every linear layer adapted (notebook 06's best), a fixed number of steps rather than 2 epochs
    # (2 epochs of 24 examples are 2 steps), no validation-based stopping (see LORA_SMALL_STEPS)
    "lora-small": LORA_SMALL,
    # lora-small started from a linear probe (LP-FT): the head begins where a logistic regression on the frozen
    # model's head features ends (init_head_from_probe), so the adapters refine a working classifier
    "lora-lpft": LORA_SMALL,
    "setfit": dict(batch_size=16, epochs=1.0, learning_rate=2e-5),  # the SetFit paper's: pairs of 16, 1 epoch
    "full-finetune": dict(learning_rate=5e-5),  # notebook 02's
    "linear-probe": {},
    "tfidf-logreg": {},
}
FIXED_STEPS = ("lora-small", "lora-lpft")  # LoRA recipes that train a fixed number of steps, without validation
LORA_SMALL_STEPS = 100  # lora-small trains max(this, 2 epochs) optimizer steps: ~15 s at any n on 2 CPU cores
SETFIT_RECIPE = {"num_iterations": 20, "max_steps": 1000}  # pairs per sentence and iteration; cap on body steps
SETFIT_SMOKE_STEPS = 2  # body steps in small mode (CI): enough to run every phase
# The largest n each method runs at on CPU, and why (None in PER_CLASS, "all", is above every cap)
MAX_PER_CLASS = {
    "setfit": (128, "a draw takes about 16 CPU minutes there (960 body steps), and at 512 the "
               "recipe's 1,000-step cap would train a quarter of its pairs"),
    "lora-lpft": (512, "LP-FT differs from lora-small only in the head's starting point, which "
                  "100 steps already forget (it trailed lora-small at every n up to 512); at 'all' (3,800 steps) it "
                  "would cost 17 CPU minutes a draw to repeat lora-small"),
}


def draw_count(n: int | None) -> int:
    """Training draws per point: 5 up to 32 examples per class, where which examples are drawn moves scores most,
    3 above (and at "all", where only the seed differs)."""
    return 5 if n is not None and n <= 32 else 3


def draw_seeds(n: int | None, draws: int | None = None) -> tuple[int, ...]:
    """The seeds of n's draws: 42 (the notebooks' seed) first, then 43, 44, ..."""
    return tuple(DEFAULT_SEED + i for i in range(draws or draw_count(n)))


def run_name(method: str, n: int | None) -> str:
    return f"curve-{method}-n{'all' if n is None else n}"


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


def run(config: Config, methods=METHODS, per_class=PER_CLASS, draws: int | None = None, log=print,
        results_dir: Path | None = None, sample=data.sample_per_class) -> dict[str, dict]:
    """Train and test every method x n x draw on config's prepared data (skipping finished ones) and summarise each
    point; summaries by run name. draws None follows draw_count; results_dir defaults to results/curves/; sample
    (split, n, seed) draws the training examples (benchmarks/setfit_emotion.py passes SetFit's own sampling)."""
    check_methods(methods)
    splits, prepared = data.load_prepared(config.paths)
    differ = [k for k, v in prepared.data_settings().items() if k != "train_size" and v != config.data_settings()[k]]
    if differ:
        raise ConfigError(f"the prepared data in {config.paths.data} was made with other settings ({differ}): "
                          "prepare it again with these (notebook 01), or drop those settings")
    curves_dir = Path(results_dir) if results_dir is not None else config.paths.results / "curves"
    summaries = {}
    for method in methods:
        for n in per_class:
            if method in MAX_PER_CLASS and (n is None or n > MAX_PER_CLASS[method][0]):
                cap, why = MAX_PER_CLASS[method]
                log(f"{run_name(method, n)}: skipped, {method} runs up to {cap} per class: {why}")
                continue
            name = run_name(method, n)
            for seed in draw_seeds(n, draws):
                point = point_config(config, method, n, seed, splits)
                path = results.path_of(curves_dir, name, seed)
                if results.finished(path, results.settings(_stub(point, method))) is not None:
                    log(f"{name} seed {seed}: already done, skipped")
                    continue
                record = _reused(config.paths.results, method, point) if n is None and method in HEADLINE else None
                if record is None:
                    log(f"{name} seed {seed}: training")
                    drawn = DatasetDict({**splits, "train": sample(splits["train"], n, seed)})
                    record = train_point(method, drawn, point)
                else:
                    log(f"{name} seed {seed}: reused {record['reused_from']}")
                record.update(run=name, curve={"method": method, "per_class": n, "seed": seed,
                                                "train_examples": point.train_size or len(splits["train"])})
                results.write(record, curves_dir)
                train = record["train"]
                log(f"{name} seed {seed}: accuracy {record['metrics']['accuracy']:.4f}, macro-F1 "
                    f"{record['metrics']['f1_macro']:.4f}, {train['seconds']:.0f} s")
            summaries[name] = seeds.summarize(curves_dir, name)
    return summaries


def point_config(config: Config, method: str, n: int | None, seed: int, splits) -> Config:
    """The settings a point trains with: the method's, the draw's seed, and train_size = the examples drawn."""
    size = len(splits["train"]) if n is None else n * len(data.labels_of(splits))
    point = config.replace(seed=seed, train_size=None if n is None else size, **SETTINGS[method])
    if method in FIXED_STEPS:  # a fixed number of steps, expressed as epochs so that the record says it
        steps = max(LORA_SMALL_STEPS, math.ceil(2 * size / point.batch_size))
        point = point.replace(epochs=steps * point.batch_size / size)
    return point


def _stub(config: Config, method: str) -> dict:
    """What results.settings needs of a record that config would make."""
    stub = {"config": results.build_config(config), "meta": {"smoke": config.smoke}}
    if method == "setfit":
        stub["recipe"] = setfit_recipe(config)
    return stub


def setfit_recipe(config: Config) -> dict:
    return {**SETFIT_RECIPE, "max_steps": SETFIT_SMOKE_STEPS} if config.smoke else dict(SETFIT_RECIPE)


def _reused(results_dir: Path, method: str, config: Config) -> dict | None:
    """The headline record of method with config's seed (results/<run>.json, results/seeds/) when its settings are
    config's, else None."""
    path = results.path_of(results_dir, method, config.seed)
    if not path.exists():
        return None
    record = results.read(path)
    if results.settings(record) != results.settings(_stub(config, method)):
        return None
    return {**record, "reused_from": str(path.relative_to(results_dir.parent))}


def train_point(method: str, drawn, config: Config) -> dict:
    """One point's record: method trained on drawn["train"] with config, tested on the whole test split. What the
    run saves (checkpoints, models) goes to a temporary folder: only the record is kept."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = config.replace(output_root=tmp)
        if method in ("lora", *FIXED_STEPS):
            record = train_lora(drawn, scratch, fixed_steps=method in FIXED_STEPS, probe_head=method == "lora-lpft")
        elif method == "setfit":
            record = train_setfit(drawn, scratch)
        elif method == "full-finetune":
            record = baselines.full_finetune(drawn, scratch, learning_rate=scratch.learning_rate)
        else:
            record = {"linear-probe": baselines.linear_probe, "tfidf-logreg": baselines.tfidf_logreg}[method](
                drawn, scratch)
    record["config"]["output_root"] = config.output_root
    return record


def train_lora(splits, config: Config, fixed_steps: bool = False, probe_head: bool = False) -> dict:
    """LoRA on splits["train"]: notebook 03's loop (validations; the final weights, or the best with early stopping),
    or with fixed_steps config.epochs straight through with no validation (lora-small); probe_head starts the
    classifier from a linear probe on the training examples (init_head_from_probe: lora-lpft)."""
    from .modeling import add_lora, count_params, load_tokenizer, model_for_training

    labels, test = data.labels_of(splits), splits["test"]
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    model = model_for_training(config, labels)
    if probe_head:
        init_head_from_probe(model, tokenizer, splits["train"], config.seed)
    model = add_lora(model, config)
    overrides = dict(eval_strategy="no", save_strategy="no", load_best_model_at_end=False) if fixed_steps else {}
    info = training.train(training.build_trainer(config, model, tokenizer, splits, **overrides))
    logits = training.predict_logits(model, tokenizer, test, config.eval_batch_size)
    return results.build("lora", "lora", config, labels, "test", np.array(test["label"]), logits.argmax(-1),
                         count_params(model), info)


def init_head_from_probe(model, tokenizer, train, seed: int, C: float = 1.0) -> None:
    """LP-FT's first step (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
    Out-of-Distribution"): fit a logistic regression on what the frozen model feeds its classifier (BERT's pooler
    output) for the training examples, and copy its weights into the classifier. C is fixed (no validation data is
    used, as with few labels there is none to spare). Models whose classifier is not one linear layer on the
    pooler output (RoBERTa's two-layer head, for one) get a ConfigError."""
    from sklearn.linear_model import LogisticRegression

    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear) or getattr(model.base_model, "pooler", None) is None:
        raise ConfigError(f"lora-lpft starts the head from a linear probe on the pooler output, which needs a "
                          f"BERT-style head (one linear layer on the pooler); {model.config.model_type} has another: "
                          "use lora-small")
    was_training = model.training
    model.eval()
    features = baselines.embed(model.base_model, tokenizer, train, pooling="pooler")
    probe = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(features, np.asarray(train["label"]))
    coef, intercept = probe.coef_, probe.intercept_
    if coef.shape[0] == 1:  # binary: scikit-learn fits one row (logit of class 1); the head has two
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(intercept, dtype=head.bias.dtype))
    model.train(was_training)


def train_setfit(splits, config: Config) -> dict:
    """SetFit (the setfit package) on the same body: contrastive fine-tuning on sentence pairs, then a logistic
    regression head on the embeddings; SETFIT_RECIPE's pairs and step cap, config's batch size, body learning rate,
    max_length and seed."""
    check_methods(("setfit",))
    from setfit import SetFitModel, Trainer, TrainingArguments

    from .modeling import resolve_model

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
    record = results.build("setfit", "setfit", config, labels, "test", np.array(test["label"]), predictions,
                           {"trainable": body + head, "total": body + head}, info)
    record["recipe"] = recipe
    return record


def load_summaries(config: Config) -> dict[str, dict]:
    """Every curve point's summary in config's results/curves/summaries/, by run name."""
    folder = config.paths.results / "curves" / "summaries"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("curve-*.json"))}


def points(config: Config, summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per draw of each summarised point: method, per_class (None: all), x (training examples per class,
    on average for "all"), seed, scores and training cost."""
    rows = []
    for run in summaries:
        method, n = parse(run)
        for record in seeds.records(config.paths.results / "curves", run):
            rows.append({"method": method, "per_class": n, "seed": record["meta"]["seed"],
                         "x": record["curve"]["train_examples"] / len(record["labels"]),
                         "accuracy": record["metrics"]["accuracy"], "f1_macro": record["metrics"]["f1_macro"],
                         "seconds": record["train"]["seconds"],
                         "examples_per_second": record["train"]["examples_per_second"]})
    return pd.DataFrame(rows)


def table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Mean +- std over the draws of accuracy and macro-F1, and the mean training time, per method and n."""
    rows = []
    for run, summary in summaries.items():
        method, n = parse(run)
        acc, f1 = summary["metrics"]["accuracy"], summary["metrics"]["f1_macro"]
        train = summary.get("train", {})
        rows.append({"method": method, "per class": "all" if n is None else n, "draws": summary["n"],
                     "accuracy": f"{acc['mean']:.4f} ± {acc['std']:.4f}",
                     "f1_macro": f"{f1['mean']:.4f} ± {f1['std']:.4f}",
                     "train time (s)": round(train["seconds"]["mean"], 1) if "seconds" in train else None,
                     "examples/s": round(train["examples_per_second"]["mean"], 1)
                     if "examples_per_second" in train else None,
                     "_order": (METHODS.index(method), math.inf if n is None else n)})
    frame = pd.DataFrame(rows)
    return frame.sort_values("_order").drop(columns="_order").reset_index(drop=True) if rows else frame


def takeaways(summaries: dict[str, dict], metric: str = "accuracy") -> list[str]:
    """Sentences computed from the summaries: who leads at each n and by how much (a lead inside the two methods'
    spread, the larger std, is called noise), where SetFit leads LoRA and where LoRA overtakes it, from where TF-IDF
    is within one point of the best, and the recommendation: the leader at the smallest n, kept until another method
    leads it beyond the spread."""
    means = {parse(run): s["metrics"][metric] for run, s in summaries.items()}
    grid = sorted({n for _, n in means}, key=lambda n: math.inf if n is None else n)

    def show(n):
        return "all" if n is None else str(n)

    def beyond(a, b):  # a's mean ahead of b's by more than the larger std
        return a["mean"] - b["mean"] > max(a["std"], b["std"])

    lines, leaders = [], {}
    for n in grid:
        here = sorted(((m, s) for (m, k), s in means.items() if k == n), key=lambda item: -item[1]["mean"])
        (best, top), rest = here[0], here[1:]
        leaders[n] = best
        if rest:
            second, other = rest[0]
            lead = 100 * (top["mean"] - other["mean"])
            noise = "" if beyond(top, other) else " (inside the spread: noise)"
            lines.append(f"n = {show(n)} per class: {best} leads with {top['mean']:.4f} ± {top['std']:.4f}, "
                         f"{lead:.1f} points ahead of {second}{noise}.")
    lora = [m for m in ("lora-small", "lora") if any(k[0] == m for k in means)]
    if "setfit" in {m for m, _ in means} and lora:
        gaps = {}
        for n in grid:
            candidates = [means[(m, n)]["mean"] for m in lora if (m, n) in means]
            if ("setfit", n) in means and candidates:
                gaps[n] = 100 * (means[("setfit", n)]["mean"] - max(candidates))
        ahead = [n for n, gap in gaps.items() if gap > 0]
        if ahead:
            lines.append(f"SetFit leads the better LoRA recipe at n = {', '.join(map(show, ahead))} per class, by up "
                         f"to {max(gaps[n] for n in ahead):.1f} points.")
        behind = [n for n, gap in gaps.items() if gap <= 0]
        if behind:
            lines.append(f"LoRA is level with or ahead of SetFit from n = {show(behind[0])} per class "
                         f"(by {-gaps[behind[0]]:.1f} points there).")
    if any(m == "tfidf-logreg" for m, _ in means):
        close = [n for n in grid if ("tfidf-logreg", n) in means and
                 max(s["mean"] for (m, k), s in means.items() if k == n) - means[("tfidf-logreg", n)]["mean"] <= 0.01]
        where = ", ".join(map(show, close))
        lines.append(f"TF-IDF + logistic regression is within 1 point of the best at n = {where} per class."
                     if close else "TF-IDF + logistic regression is more than 1 point behind the best "
                     "at every n.")
    # the recommended method changes only where the leader beats it beyond the spread (or it was not run there)
    current, switches = None, []  # switches: (n, the method recommended below n)
    for n in grid:
        kept = means.get((current, n))
        if kept is None or beyond(means[(leaders[n], n)], kept):
            if current is not None and leaders[n] != current:
                switches.append((n, current))
            current = leaders[n]
    if switches:
        parts = [f"with fewer than {show(n)} labelled examples per class, use {before}" for n, before in switches]
        lines.append(f"Recommendation: {'; '.join(parts)}; from {show(switches[-1][0])} on, use {current} "
                     "(a lead inside the spread does not change it).")
    elif grid:
        lines.append(f"Recommendation: use {current} at every n measured here.")
    return lines
