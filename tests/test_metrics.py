import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from lora_ft.training import score


@pytest.mark.parametrize("seed", range(6))
def test_metric_module_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 7))
    references = rng.integers(0, n_classes, size=int(rng.integers(5, 300)))
    predictions = np.where(rng.random(len(references)) < 0.6, references, rng.integers(0, n_classes, len(references)))
    if seed % 2:  # a class that is never predicted exercises the zero-division rule
        predictions[predictions == n_classes - 1] = 0
    names = [f"class{i}" for i in range(n_classes)]
    ids = list(range(n_classes))

    ours = score(references, predictions, names)

    precision, recall, f1, support = precision_recall_fscore_support(
        references, predictions, labels=ids, average=None, zero_division=0)
    macro = precision_recall_fscore_support(references, predictions, labels=ids, average="macro", zero_division=0)
    assert ours["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    assert [ours["precision_macro"], ours["recall_macro"], ours["f1_macro"]] == pytest.approx(list(macro[:3]))
    for i, name in enumerate(names):
        assert ours["per_class"][name] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]})
    assert ours["confusion_matrix"] == confusion_matrix(references, predictions, labels=ids).tolist()
