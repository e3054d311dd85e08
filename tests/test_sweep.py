"""The sweep is data run by the one runner: each grid point once, on the real model, finished points skipped with
one line, and every committed sweep record still counts as finished."""

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from lora_ft import Config, ConfigError, data, experiments, results, sweep_plots
from lora_ft.config import ROOT, SEEDS, TARGET_SETS
from lora_ft.modeling import load_model, load_tokenizer, lora_targets

LABELS = ["negative", "neutral", "positive"]
TEXTS = [("awful delay again", 0), ("rude staff, never again", 0), ("lost my luggage", 0),
         ("boarding at gate 4", 1), ("the car has sensors", 1), ("flight 22 to Denver", 1),
         ("great crew, thanks!", 2), ("love this app", 2), ("smooth ride, happy", 2)]


def test_grid_is_the_seed_grid_plus_extra_targets():
    points = experiments.sweep_grid()  # experiments.SWEEP: notebook 06's grid
    assert len(points) == 10 and len({p.name for p in points}) == 10
    assert {(p.changes["r"], p.changes["alpha"]) for p in points
            if p.changes["target_modules"] == TARGET_SETS["query-value"]} == {
        (r, float(r * k)) for r in (1, 4, 8, 16) for k in (1, 2)}
    assert "sweep-all-linear-r8-alpha16" in {p.name for p in points}
    assert all(p.changes["early_stopping_patience"] == 0 and p.changes["train_size"] == 4000 for p in points)


def test_target_sets_match_real_layers_and_unknown_suffixes_fail():
    model = load_model(Config().model, LABELS, seed=0)
    for targets in TARGET_SETS.values():
        assert lora_targets(model, targets) == list(targets)
    with pytest.raises(ConfigError, match="not linear layers"):
        lora_targets(model, ("attention.output.query",))


def test_every_committed_sweep_record_is_finished():
    """Planning the full grid over the committed records (no training) finds each of them finished with today's
    settings: the grid's data still names and describes what was run."""
    grid = [point for seed in SEEDS for point in experiments.sweep_grid(seed=seed)]
    todo, done = experiments.plan(grid, Config(smoke=False), ROOT / "results")
    assert todo == []
    committed = {p.name for p in (ROOT / "results").glob("sweep-*.json")} | {
        p.name for p in (ROOT / "results" / "seeds").glob("sweep-*.json")}
    assert {results.path_of(ROOT / "results", r["run"], r["meta"]["seed"]).name for r in done} == committed


def test_sweep_writes_one_record_per_point_and_skips_finished_ones(tmp_path, monkeypatch):
    config = Config(smoke=True, output_root=str(tmp_path), batch_size=3)
    tokenizer = load_tokenizer(config.model)
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    split = Dataset.from_dict({"text": [t for t, _ in TEXTS], "label": [y for _, y in TEXTS]}, features=features)
    splits = data.tokenize(DatasetDict(train=split, validation=split, test=split), tokenizer, config.max_length)
    monkeypatch.setattr(experiments.data, "prepare", lambda config: DatasetDict(splits))
    said = []
    summaries = experiments.sweep(config, ranks=(1, 2), alpha_ratios=(2,), extra_targets=(), train_size=None,
                                  log=said.append)
    names = ["sweep-query-value-r1-alpha2", "sweep-query-value-r2-alpha4"]
    assert sorted(summaries) == names and said[0] == "2 configurations, 9 training examples each"
    assert [line.split(":")[0] for line in said[1:]] == [f"{name} seed 42" for name in names]
    records = {name: results.read(config.paths.results / f"{name}.json") for name in names}
    for name, record in records.items():
        assert len(record["predictions"]) == len(record["confidence"]) == len(TEXTS)
        assert all(1 / 3 <= c <= 1 for c in record["confidence"])
        assert record["config"]["train_size"] == 9 and record["config"]["early_stopping_patience"] == 0
        assert (config.paths.results / "summaries" / f"{name}.json").is_file() and summaries[name]["n"] == 1
    stamps = {p.name: p.stat().st_mtime_ns for p in config.paths.results.glob("*.json")}
    said.clear()
    experiments.sweep(config, ranks=(1, 2), alpha_ratios=(2,), extra_targets=(), train_size=None,
                      log=said.append)
    assert said[1:] == ["2 already done, skipped"]  # once per grid, not once per run
    assert {p.name: p.stat().st_mtime_ns for p in config.paths.results.glob("*.json")} == stamps

    frame = sweep_plots.sweep_frame(records)
    assert list(frame["r"]) == [1, 2] and set(frame["targets"]) == {"query-value"}
    pairs = sweep_plots.confused_pairs(records)
    if len(pairs) and pairs["share of errors"].notna().all():
        assert pairs["share of errors"].sum() == pytest.approx(1.0)
