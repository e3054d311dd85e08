"""The sweep runs each grid point once, on the real model, and its analysis helpers add up."""

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from lora_ft import Config, ConfigError, data, plots, sweep
from lora_ft.modeling import load_model, load_tokenizer, lora_targets

LABELS = ["negative", "neutral", "positive"]
TEXTS = [("awful delay again", 0), ("rude staff, never again", 0), ("lost my luggage", 0),
         ("boarding at gate 4", 1), ("the car has sensors", 1), ("flight 22 to Denver", 1),
         ("great crew, thanks!", 2), ("love this app", 2), ("smooth ride, happy", 2)]


def test_grid_is_the_seed_grid_plus_extra_targets():
    points = sweep.grid()  # sweep.GRID: notebook 06's grid
    assert len(points) == 10 and len({sweep.run_name(p) for p in points}) == 10
    assert {(p["r"], p["alpha"]) for p in points if p["_targets"] == "query-value"} == {
        (r, float(r * k)) for r in (1, 4, 8, 16) for k in (1, 2)}


def test_target_sets_match_real_layers_and_unknown_suffixes_fail():
    model = load_model(Config().model, LABELS, seed=0)
    for targets in sweep.TARGET_SETS.values():
        assert lora_targets(model, targets) == list(targets)
    with pytest.raises(ConfigError, match="not linear layers"):
        lora_targets(model, ("attention.output.query",))


def test_sweep_writes_one_record_per_point_and_skips_finished_ones(tmp_path):
    config = Config(smoke=True, output_root=str(tmp_path), batch_size=3)
    tokenizer = load_tokenizer(config.model)
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    split = Dataset.from_dict({"text": [t for t, _ in TEXTS], "label": [y for _, y in TEXTS]}, features=features)
    splits = data.tokenize(DatasetDict(train=split, validation=split, test=split), tokenizer, config.max_length)
    points = sweep.grid((1, 2), (2,), extra_targets=())
    records = sweep.run(config, splits, tokenizer, points)
    assert sorted(records) == sorted(sweep.run_name(p) for p in points)
    for record in records.values():
        assert len(record["predictions"]) == len(record["confidence"]) == len(TEXTS)
        assert all(1 / 3 <= c <= 1 for c in record["confidence"])
    stamps = {p.name: p.stat().st_mtime_ns for p in config.paths.results.glob("*.json")}
    said = []
    again = sweep.run(config, splits, tokenizer, points, log=said.append)
    assert all(line.endswith("skipped") for line in said) and len(said) == 2
    assert {p.name: p.stat().st_mtime_ns for p in config.paths.results.glob("*.json")} == stamps
    assert again.keys() == records.keys()

    frame = plots.sweep_frame(records)
    assert list(frame["r"]) == [1, 2] and set(frame["targets"]) == {"query-value"}
    pairs = plots.confused_pairs(records)
    if len(pairs) and pairs["share of errors"].notna().all():
        assert pairs["share of errors"].sum() == pytest.approx(1.0)
