"""Accuracy, macro and per-class precision/recall/F1 and the confusion matrix, as an `evaluate` metric.

Shipped with the project and loaded by path, so it works offline: evaluate.load("<path to this file>").
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy, macro-averaged and per-class precision, recall and F1, and the confusion matrix."
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of str, optional): class names in id order; sets the number of classes.
Returns:
    accuracy, precision_macro, recall_macro, f1_macro (float), per_class (name -> precision, recall, f1,
    support), confusion_matrix (rows: true class, columns: predicted class).
"""


class ClassificationReport(evaluate.Metric):
    def _info(self):
        ids = datasets.Value("int64")
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"predictions": ids, "references": ids}))

    def _compute(self, predictions, references, labels=None):
        predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        n = len(labels) if labels is not None else int(max(predictions.max(initial=0), references.max(initial=0))) + 1
        names = list(labels) if labels is not None else [str(i) for i in range(n)]
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (references, predictions), 1)
        hits = np.diag(matrix).astype(float)
        predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
        # a class never predicted (or never present) scores 0, as scikit-learn's zero_division=0 does
        precision = np.divide(hits, predicted, out=np.zeros(n), where=predicted > 0)
        recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.zeros(n), where=total > 0)
        return {
            "accuracy": float(hits.sum() / max(len(references), 1)),
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
            "f1_macro": float(f1.mean()),
            "per_class": {
                name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for name, p, r, f, s in zip(names, precision, recall, f1, support)
            },
            "confusion_matrix": matrix.tolist(),
        }
