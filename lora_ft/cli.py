"""`python -m lora_ft <step>`: the notebooks' steps from a terminal, with settings from a file and key=value."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import textwrap
from pathlib import Path

from . import curves, experiments, grids, label_errors, pipeline, serving
from .config import SEEDS, TARGET_SETS, Config
from .errors import ConfigError, DataError, LoraFtError, listed
from .experiments import EXTRA_POINT, SWEEP
from .settings import FIELDS, as_word, is_setting, make_config, parse_overrides, read_config_file

STEPS = {
    "prepare": "load, clean, split and tokenize the data (notebook 01); writes data/prepared/",
    "baseline": "score the majority class, the untrained pretrained model, TF-IDF + logistic regression, a linear "
                "probe on the frozen encoder and full fine-tuning on the test split (notebook 02); writes results/"
                "<baseline>.json and model/{tfidf-logreg,linear-probe,full-finetune}/",
    "train": "train LoRA adapters and score them on the test split (notebook 03); writes model/lora-adapter/ and "
             "its merged export model/lora-merged/ (each with a model card), model/checkpoints/ and results/lora.json",
    "evaluate": "reload the saved adapter into a fresh base model and score the test split again; "
                "writes results/lora-reloaded.json",
    "sweep": "train and score notebook 06's rank x alpha/r x targets grid on a training subsample; "
             "writes results/sweep-*.json, skipping runs already there",
    "seeds": "re-run recorded runs (results/<run>.json, seed 42) with other seeds, settings otherwise unchanged, and "
             "summarise the spread; writes results/seeds/ and results/summaries/<run>.json, skipping seeds done",
    "curves": "learning curves (notebook 07): each method trained on several draws of n examples per class, scored "
              "on the test split; writes results/curves/curve-<method>-n<k>.json, seeds/ and summaries/ there, "
              "skipping points already done",
    "recipes": "train named LoRA recipes (targets, learning rate x alpha/r, variants, speed knobs) on one budget with "
               "each seed, scored on the test split (notebook 08); writes results/recipes/, skipping finished runs",
    "predict": "classify texts with a saved adapter; prints label, probability and text, one line per text, or "
               "with --input and --output classifies a csv, tsv, jsonl or txt file into a csv or jsonl file",
    "export": "merge a saved adapter into its base model and save a plain transformers model with tokenizer and model "
              "card, which transformers.pipeline serves (train does this too); writes model/lora-merged/",
    "find-label-errors": "flag training examples whose label looks wrong: out-of-sample probabilities by k-fold "
                         "cross-validation, ranked by cleanlab (notebook 10); writes results/label-errors.csv",
    "all": "prepare, baseline, train, evaluate and sweep, in order",
}

def main(argv: list[str] | None = None) -> int:
    """Run one step; a LoraFtError becomes one line on stderr and exit status 2, Ctrl-C one line and status 130."""
    args = parse_args(argv)
    try:
        _run(args)
    except LoraFtError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(interrupted(args, interrupt), file=sys.stderr)
        return 130
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The step and its arguments; options and key=value words may come in any order (e.g. `train r=4 --resume`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    texts = []
    if "--" in argv:  # everything after it is text, even a word that looks like key=value
        argv, texts = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    top = parser()
    if argv and argv[0] in STEPS:  # argparse mixes options and positionals only without subparsers: parse the step's
        args = top.step_parsers[argv[0]].parse_intermixed_args(argv[1:])
        args.step = argv[0]
    else:
        args = top.parse_args(argv)
    args.texts = texts
    return args


def interrupted(args, interrupt: KeyboardInterrupt) -> str:
    """The line Ctrl-C leaves: what training saved, and the exact command that goes on from there."""
    words = (["--config", str(args.config)] if args.config else []) + list(args.settings)
    then = " (then evaluate and sweep)" if args.step == "all" else ""
    if not hasattr(interrupt, "checkpoint"):  # not while training: every file is whole or not there
        return ("interrupted: files are written whole or not at all, so none was left half-written; run the same "
                "command again to finish")
    if interrupt.checkpoint is None:
        return ("interrupted before the first checkpoint: nothing of this training was saved; start it again with: "
                f"{shlex.join(['python', '-m', 'lora_ft', 'train', *words])}{then}")
    return (f"interrupted: training is saved up to {interrupt.checkpoint}; continue with: "
            f"{shlex.join(['python', '-m', 'lora_ft', 'train', '--resume', *words])}{then}")


def _run(args) -> None:
    step, words, texts = args.step, args.settings, []
    if step == "predict":  # a word naming a setting is a setting; the others, and all after --, are texts
        texts = [w for w in words if not is_setting(w)] + args.texts
        words = [w for w in words if is_setting(w)]
    elif args.texts:
        raise ConfigError(f"{step} takes no texts, and {shlex.join(args.texts)!r} follows --: only predict "
                          "reads texts; write settings as key=value before any --")
    config = make_config(step, args.config, parse_overrides(words))

    if step in ("prepare", "all"):  # all: these five steps, in order
        pipeline.prepare(config)
    if step in ("baseline", "all"):
        pipeline.baseline(config, full_finetune=args.full_finetune)
    if step in ("train", "all"):
        pipeline.train(config, resume=step == "train" and args.resume)
    if step in ("evaluate", "all"):
        pipeline.evaluate(config)
    if step in ("sweep", "all"):  # the sweep grid's options that were given
        experiments.sweep(config, **{name: getattr(args, name) for name in SWEEP if hasattr(args, name)})
    if step == "seeds":
        experiments.seeds(args.runs, args.seeds, config.paths.results)
    elif step == "recipes":
        names = [n for group in (args.groups or ()) for n in grids.GROUPS[group]] + list(args.names or ())
        experiments.recipes(names or tuple(grids.RECIPES), args.seeds, config, jobs=args.jobs)
    elif step == "curves":
        experiments.learning_curves(config, args.methods or curves.METHODS, args.per_class or curves.PER_CLASS,
                                    args.draws)
    elif step == "find-label-errors":
        pipeline.find_label_errors(config, args.method, args.folds, args.output)
    elif step == "export":
        serving.export(config, args.adapter, args.output)
    elif step == "predict":
        _predict(args, config, words, texts)


def _predict(args, config: Config, words: list[str], texts: list[str]) -> None:
    """predict: texts or a file, with one adapter or several task adapters on one base (--adapter NAME=DIR ...)."""
    split = (a.rpartition("=") for a in args.adapter or [])  # [NAME=]DIR: the task's name (default: the folder's)
    given = [(name or Path(folder).name, Path(folder)) for name, _, folder in split]
    names = [name for name, _ in given]
    if len(set(names)) < len(names):
        raise ConfigError(f"two adapters are named {listed(sorted({n for n in names if names.count(n) > 1}))}: name "
                          "each task's adapter apart, --adapter NAME=DIR")
    adapters = dict(given)
    several, adapter = len(adapters) > 1, next(iter(adapters.values()), None)
    if args.input or args.output:
        if not (args.input and args.output) or texts or args.file or args.json:
            raise ConfigError("predict --input FILE needs --output FILE, and takes no texts, --file or --json: "
                              "give both files, or texts alone")
        # the file's own format: only what this command was given, never the prepared data's delimiter or encoding
        file = {**(read_config_file(args.config) if args.config else {}), **parse_overrides(words)}
        classify = serving.predict_file_tasks if several else serving.predict_file
        classify(config, args.input, args.output, adapters if several else adapter, args.text_column,
                 file.get("delimiter"), file.get("encoding"), log=lambda line: print(line, file=sys.stderr))
        return
    texts += read_texts(args.file) if args.file else []
    print(serving.predict_text(config, texts, adapters, args.json))


def read_texts(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"text file {path} does not exist: check the path") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8") from None
    return [line.strip() for line in lines if line.strip()]


def settings_help() -> str:
    """Every setting with its type, default and description, for the epilog of each step's --help."""
    lines = textwrap.wrap("settings: key=value words, or keys of the --config file; lists are comma-separated, None "
                          "or null unsets. Steps other than prepare and all start from the defaults below and the "
                          "prepared data's own settings (data set, model, split, tokenization), as notebooks 02 to 08 "
                          "do; what one step is given is not kept for the next.", 100) + [""]
    for field in FIELDS.values():
        default = "" if field.default is dataclasses.MISSING else f" = {as_word(field.default)}"
        lines.append(f"  {field.name}: {field.type}{default}")
        lines += textwrap.wrap(field.metadata["help"], 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def _numbers(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}s") from None

    return parse


def _names(text: str) -> tuple[str, ...]:
    return () if text.strip().lower() in ("", "none") else tuple(part.strip() for part in text.split(","))


def _train_size(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a positive integer nor all")
    return int(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m lora_ft", description="The notebooks' steps from a terminal. "
                                  "`python -m lora_ft STEP --help` lists the step's options and every setting.")
    steps = top.add_subparsers(dest="step", required=True, metavar="STEP")
    top.step_parsers = steps.choices  # parse_args parses a step's words with its own parser
    for name, summary in STEPS.items():
        description = textwrap.fill(summary[0].upper() + summary[1:] + ".", 100)
        step = steps.add_parser(name, help=summary, description=description, epilog=settings_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        step.add_argument("--config", type=Path, metavar="FILE",
                          help="settings file (.json, .yaml or .yml) whose keys are the settings below")
        if name == "predict":
            step.add_argument("settings", nargs="*", metavar="key=value | text",
                              help="settings (a word that starts with a setting's name and =), and texts to classify")
            step.add_argument("--file", type=Path, metavar="PATH", help="UTF-8 file of texts, one per line")
            step.add_argument("--json", action="store_true", help="print a JSON list of {text, label, score}")
            batch = step.add_argument_group("a file of texts")
            batch.add_argument("--input", type=Path, metavar="FILE", help="csv, tsv, jsonl or txt file to classify in "
                               "chunks: each row gets label and prob_<class> columns; one with labels is also scored "
                               "(a predicted column, metrics in results/scored/scored-<name>.json); delimiter= and "
                               "encoding= read it")
            batch.add_argument("--output", type=Path, metavar="FILE", help="csv or jsonl file to write, atomically")
            batch.add_argument("--text-column", metavar="NAME",
                               help="column holding the text (default: found by its name, as prepare finds it)")
            step.add_argument("--adapter", action="append", metavar="[NAME=]DIR",
                              help="adapter folder that train saved (default: model/lora-adapter/ in the output "
                                   "root); repeat to classify with several task adapters on one base in one pass, "
                                   "each task's columns or scores named NAME (default: the folder's name)")
        else:
            step.add_argument("settings", nargs="*", metavar="key=value", help="settings that override the file's")
        if name == "export":
            step.add_argument("--adapter", type=Path, metavar="DIR",
                              help="adapter folder that train saved (default: model/lora-adapter/ in the output root)")
            step.add_argument("--output", type=Path, metavar="DIR",
                              help="folder to write (default: model/lora-merged/ in the output root)")
        if name == "find-label-errors":
            step.add_argument("--method", choices=label_errors.METHODS, default="probe",
                              help="what gives the out-of-sample probabilities (default probe: a linear probe on the "
                                   "frozen encoder; tfidf is faster, lora trains an adapter per fold)")
            step.add_argument("--folds", type=int, default=label_errors.FOLDS, metavar="K",
                              help=f"cross-validation folds (default {label_errors.FOLDS})")
            step.add_argument("--output", type=Path, metavar="FILE",
                              help="the suspects' CSV (default results/label-errors.csv in the output root)")
        if name == "train":
            step.add_argument("--resume", action="store_true", help="continue from the last checkpoint in "
                              "model/checkpoints/ if any, made with these settings and data")
        if name in ("baseline", "all"):
            step.add_argument("--no-full-finetune", dest="full_finetune", action="store_false",
                              help="skip the full fine-tuning baseline, slower than LoRA (default: run it)")
        if name == "seeds":
            step.add_argument("--runs", type=_names, default=None, metavar="RUN,...",
                              help="recorded runs to repeat (default: every one in results/ that can be)")
            step.add_argument("--seeds", type=_numbers(int), default=SEEDS[1:], metavar="SEED,...",
                              help=f"seeds to add (default {','.join(map(str, SEEDS[1:]))}: with the notebooks' "
                                   f"{SEEDS[0]}, {len(SEEDS)} in all)")
        if name == "recipes":
            step.add_argument("--names", type=_names, default=None, metavar="NAME,...",
                              help="recipes of lora_ft.grids.RECIPES to run (default: all)")
            step.add_argument("--groups", type=_names, default=None, metavar="GROUP,...",
                              help="groups of recipes: targets, learning-rate, ... (lora_ft.grids.GROUPS)")
            step.add_argument("--seeds", type=_numbers(int), default=SEEDS, metavar="SEED,...",
                              help=f"seeds (default {','.join(map(str, SEEDS))})")
            step.add_argument("--jobs", type=int, default=1, metavar="N", help="runs at once, each its own process "
                              "(default 1; more only on a GPU, which one small run leaves idle: CPU runs share cores)")
        if name == "curves":
            step.add_argument("--methods", type=_names, default=None, metavar="NAME,...",
                              help=f"of {', '.join(curves.METHODS)} (default: all of them)")
            step.add_argument("--per-class", type=lambda text: tuple(map(_train_size, text.split(","))),
                              default=None, metavar="N,...",
                              help="training examples per class, all for the whole split (default 8,32,128,512,all)")
            step.add_argument("--draws", type=int, default=None, metavar="K",
                              help="training draws per point (default: 5 up to 32 per class, 3 above)")
        if name in ("sweep", "all"):
            sweep = step.add_argument_group("sweep grid (default: notebook 06's, lora_ft.experiments.SWEEP)",
                                            argument_default=argparse.SUPPRESS)  # absent unless given
            sweep.add_argument("--ranks", type=_numbers(int), metavar="R,...",
                               help=f"LoRA ranks (default {as_word(SWEEP['ranks'])})")
            sweep.add_argument("--alpha-ratios", type=_numbers(float), metavar="K,...",
                               help=f"alpha / r values: alpha = K * r (default {as_word(SWEEP['alpha_ratios'])})")
            sweep.add_argument("--targets", type=_names, metavar="NAME,...",
                               help=f"target sets ({', '.join(TARGET_SETS)}) that get every rank x alpha/r "
                                    f"(default {as_word(SWEEP['targets'])})")
            sweep.add_argument("--extra-targets", type=_names, metavar="NAME,...",
                               help=f"target sets run once more at r {EXTRA_POINT[0]}, alpha/r {EXTRA_POINT[1]}, "
                                    f"or none (default {as_word(SWEEP['extra_targets'])})")
            sweep.add_argument("--train-size", type=_train_size, metavar="N", help="stratified training subsample "
                               f"per run, or all (default {SWEEP['train_size']}); replaces the train_size setting")
            sweep.add_argument("--epochs", type=float, metavar="E", help="passes over it per run (default "
                               f"{SWEEP['epochs']:g}); replaces the epochs setting")
    return top
