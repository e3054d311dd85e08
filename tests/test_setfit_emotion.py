"""benchmarks/setfit_emotion.py: skipped cleanly without the offline copy of emotion, and its draws are SetFit's own
(setfit.data.create_samples with random_state 0, 1, ... for seeds 42, 43, ...)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "setfit_emotion.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("setfit_emotion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_the_offline_copy_it_says_so_and_succeeds(bench, tmp_path, capsys):
    assert bench.main(["--shared", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"skipped: no offline copy of emotion at {tmp_path / 'emotion'} " \
                                              "(pass --shared DIR)"


def test_its_draws_are_setfits_create_samples(bench):
    setfit_data = pytest.importorskip("setfit.data", reason="setfit is an optional dependency")
    labels = [label for label, count in enumerate((30, 12, 9)) for _ in range(count)]
    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b", "c"])})
    split = Dataset.from_dict({"text": [f"t{i}" for i in range(len(labels))], "label": labels}, features=features)
    frame = split.to_pandas()
    for seed in (42, 43):
        drawn = bench.setfit_sample(split, 8, seed)
        assert np.bincount(drawn["label"]).tolist() == [8, 8, 8]
        published = setfit_data.create_samples(frame, 8, seed - 42)  # SetFit's draw i uses random_state i
        assert sorted(drawn["text"]) == sorted(published["text"])
    assert sorted(bench.setfit_sample(split, 8, 42)["text"]) != sorted(bench.setfit_sample(split, 8, 43)["text"])
