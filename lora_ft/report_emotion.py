"""SetFit's few-shot result on dair-ai emotion, replicated (benchmarks/setfit_emotion.py), with this project's LoRA
recipes on the same draws, in tables and words from the records, without torch: docs/data-efficiency.md's emotion
report blocks (BLOCKS). Verdicts are stats.paired's over the shared draws."""

from __future__ import annotations

import functools
from pathlib import Path

from . import stats
from .report_curves import Curves, _days, _device, _versus, markdown_table, steps

EMOTION = "public/setfit-emotion"  # benchmarks/setfit_emotion.py's records under results/
# the SetFit paper's emotion test accuracy over 10 draws: MiniLM (benchmarks/setfit_emotion.PUBLISHED), mpnet (110M)
PUBLISHED = {8: (0.391, 0.047)}
MPNET = {8: (0.488, None), 64: (0.762, 0.013)}


def emotion_table(results_dir: Path, n: int) -> str:
    """benchmarks/setfit_emotion.py's draws at n per class: what ran, then each method's scores and training time."""
    c = Curves(Path(results_dir) / EMOTION)
    shown = [m for m in ("setfit", "lora-small", "lora", "lora-mean") if c.has(n, m)]
    if not shown:
        return f"(no records in results/{EMOTION}/ at {n} per class: run benchmarks/setfit_emotion.py)"
    found, rows = [r for m in shown for r in c.points[(m, n)]], []
    for m in shown:
        accuracy = c.shown(m, n) if m != c.at(n, shown)[0] else f"**{c.shown(m, n)}**"
        if m == "setfit" and n in PUBLISHED:
            accuracy += f" (published {PUBLISHED[n][0]:.3f} ± {PUBLISHED[n][1]:.3f})"
        rows.append(["lora (the project's recipe)" if m == "lora" else m, accuracy,
                     stats.mean_std(c.spread(m, n, "f1_macro")), f"{c.seconds(m, n):.0f} s"])
    return (f"{max(len(c.points[(m, n)]) for m in shown)} draws at {n} per class, made {_days(found)}, device "
            f"{_device(c)}: {sum(r['train']['seconds'] for r in found) / 60:.0f} minutes of training in all"
            + (f", SetFit {steps(c.points[('setfit', n)][0])} body steps per draw" if "setfit" in shown else "") +
            f". Test accuracy and macro-F1, mean ± std over the draws, on the whole test split of "
            f"{found[0]['n_examples']:,} examples:\n\n"
            + markdown_table("method | accuracy | macro-F1 | training time per draw", "lllr", rows))


def emotion_takeaways(results_dir: Path, n: int) -> str:
    """The replication against the published figures, SetFit against lora-small on the same draws, the default."""
    c, said = Curves(Path(results_dir) / EMOTION), []
    if c.has(n, "setfit") and n in PUBLISHED:
        (mean, std), ours = PUBLISHED[n], c.spread("setfit", n)
        said.append(f"**The replication {'lands inside' if abs(ours['mean'] - mean) < std else 'falls outside'} the "
                    f"published spread**: {100 * ours['mean']:.2f} against {100 * mean:.1f} ± {100 * std:.1f}, with "
                    f"a spread of {100 * ours['std']:.1f} points over our {ours['n']} draws.")
    if c.has(n, "setfit", "lora-small"):
        p = c.pair(*c.at(n, ("setfit", "lora-small")), n)
        said.append(f"**On the same draws {_versus(p)}**, in {c.seconds(p.a, n):.0f} s of training against "
                    f"{p.b}'s {c.seconds(p.b, n):.0f} s.")
    if n in MPNET and n != min(MPNET) and c.has(n, "setfit") and c.has(min(MPNET), "setfit"):
        low, high = c.mean("setfit", min(MPNET)), c.mean("setfit", n)
        (was, _), (now, std) = MPNET[min(MPNET)], MPNET[n]
        said.append(f"**The published figure at {n} per class is for a larger body**: SetFit with "
                    f"paraphrase-mpnet-base-v2 (110M parameters against MiniLM's "
                    f"{c.points[('setfit', n)][0]['params']['total'] / 1e6:.0f}M) scored {100 * now:.1f} ± "
                    f"{100 * std:.1f}. It is context, not a target for this body; what compares is the gain from "
                    f"{min(MPNET)} to {n} per class: {100 * (high - low):.1f} points for SetFit here ({low:.4f} to "
                    f"{high:.4f}), {100 * (now - was):.1f} for mpnet in the paper ({100 * was:.1f} to "
                    f"{100 * now:.1f}).")
    if c.has(n, "lora", "setfit"):
        made = c.points[("lora", n)][0]
        said.append(f"**The project's recipe (lora)** scores {c.shown('lora', n)} with {len(made['labels'])} classes: "
                    f"{_versus(c.pair('lora', 'setfit', n))}; " + (trained_how(made) + (
                        f", against lora-small's {steps(c.points[('lora-small', n)][0])} optimizer steps"
                        if c.has(n, "lora-small") else "")) + ".")
    if c.has(n, "lora-mean", "lora"):
        said.append(f"**The head on the mean of the tokens (lora-mean, pooling=mean)** scores "
                    f"{c.shown('lora-mean', n)}: "
                    f"{'; '.join(_versus(c.pair('lora-mean', m, n)) for m in ('lora', 'setfit') if c.has(n, m))}.")
    return "\n".join(f"- {line}" for line in said)


def trained_how(record: dict) -> str:
    """How much training a LoRA record had, in words: its contrastive pairs, else the Trainer's epochs and steps."""
    train, config, examples = record["train"], record["config"], record["curve"]["train_examples"]
    if config.get("contrastive"):
        return (f"{steps(record)} steps of {config['batch_size']} pairs of texts ({train['pairs'] / examples:g} pairs "
                f"per text, SetFit's recipe) on its adapters, then a logistic-regression head")
    return (f"{config['epochs']:g} epochs of {examples} examples at batch {config['batch_size']} are "
            f"{steps(record)} optimizer steps")


def setfit_published(results: Path) -> str:  # the SetFit paper's emotion accuracy at 8 per class
    return "{:.1f} ± {:.1f}".format(*(100 * x for x in PUBLISHED[8]))


# docs/data-efficiency.md's emotion report blocks (`<!-- report:NAME -->`), for lora_ft.report.BLOCKS
BLOCKS = {"emotion-8": functools.partial(emotion_table, n=8),
          "emotion-8-takeaways": functools.partial(emotion_takeaways, n=8),
          "emotion-64": functools.partial(emotion_table, n=64),
          "emotion-64-takeaways": functools.partial(emotion_takeaways, n=64)}
