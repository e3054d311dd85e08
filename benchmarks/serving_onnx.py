"""Serving on a CPU: `predict --input` (the merged model in bf16) against ONNX Runtime, fp32 and dynamic int8.

    python benchmarks/serving_onnx.py                       # the adapter in model/, 10,000 rows
    python benchmarks/serving_onnx.py --adapter smoke/model/lora-adapter --rows 500

One run, the same texts for every path: the trained adapter is merged into its base (serving.serving_model) and
  bf16        served as `python -m lora_ft predict --input` serves it (torch, bf16 where the CPU computes it)
  onnx-fp32   the merged fp32 model exported to ONNX (torch.onnx.export), run by onnxruntime
  onnx-int8   that graph with its weights quantized to int8 (onnxruntime.quantization.quantize_dynamic)
Each path runs in a fresh process, loads its model, classifies --rows tweets of the corpus in chunks of
serving.CHUNK_ROWS rows (tokenized and batched alike: sorted by length, batches of 64, padded to a multiple of 8),
then the test split. Reported: load seconds, rows/s, peak resident memory above the process's start (libraries
included), the model's size on disk and its test accuracy, with its change from bf16. Writes
results/speed/serving-onnx.json, which docs/speed.md shows (python -m lora_ft.report).

optimum (Hugging Face's ONNX exporter) needs transformers < 4.58 and this project runs 5.x, so the export uses
PyTorch's own exporter and onnxruntime's quantizer, which optimum calls underneath. onnxruntime, onnx and onnxscript
are optional dependencies (requirements.txt lists them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset

from lora_ft import data, report, serving, sources, training
from lora_ft.config import PAD_TO_MULTIPLE_OF, ROOT, Config
from lora_ft.io import write_json_atomic
from lora_ft.measure import folder_mb, measure
from lora_ft.modeling import load_tokenizer, resolve_model
from lora_ft.provenance import saved_adapter
from lora_ft.run import meta

PATHS = ("bf16", "onnx-fp32", "onnx-int8")
BATCH = 64
OPSET = 17
OUTPUT = ROOT / "results" / "speed" / "serving-onnx.json"  # docs/speed.md's table (lora_ft.report)


def export_onnx(adapter: Path, folder: Path) -> dict[str, Path]:
    """The merged fp32 model as ONNX (batch and length dynamic), and its int8 dynamic quantization."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # optional dependency

    model, tokenizer, _, _ = serving.serving_model(Config(precision="fp32"), adapter)
    training.set_attention(model, "eager", strict=False)  # plain operations: what the exporter traces best
    model.eval()
    sample = tokenizer(["an example tweet", "and a longer example tweet to trace"], padding=True, return_tensors="pt")
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    dynamic = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
               "logits": {0: "batch"}}
    with torch.inference_mode():
        torch.onnx.export(model, (sample["input_ids"], sample["attention_mask"]), str(fp32), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=dynamic, opset_version=OPSET)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return {"onnx-fp32": fp32, "onnx-int8": int8}


class OnnxModel:
    """An ONNX Runtime session that classifies tokenized datasets as training.predict_logits does."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime  # optional dependency

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def logits(self, tokenizer, dataset, batch_size: int) -> np.ndarray:
        order = training.length_order(dataset)
        columns = dataset.select_columns(["input_ids", "attention_mask"])
        out = None
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            batch = tokenizer.pad(columns[rows.tolist()], pad_to_multiple_of=PAD_TO_MULTIPLE_OF, return_tensors="np")
            logits = self.session.run(["logits"], {"input_ids": batch["input_ids"].astype(np.int64),
                                                   "attention_mask": batch["attention_mask"].astype(np.int64)})[0]
            out = np.empty((len(dataset), logits.shape[1]), np.float32) if out is None else out
            out[rows] = logits
        return out


def serve(path: str, adapter: Path, model_file: Path | None, texts: list[str], test) -> dict:
    """Load path's model, classify texts chunk by chunk, then the test split: its timings, memory and accuracy."""
    trained, labels = saved_adapter(adapter)
    tokenizer = load_tokenizer(str(adapter))
    with measure() as memory:
        start = time.perf_counter()
        if path == "bf16":
            model = serving.serving_model(Config(), adapter)[0]
            logits = lambda dataset: training.predict_logits(model, tokenizer, dataset, BATCH)  # noqa: E731
        else:
            session = OnnxModel(model_file, torch.get_num_threads())
            logits = lambda dataset: session.logits(tokenizer, dataset, BATCH)  # noqa: E731
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        predicted = []
        for first in range(0, len(texts), serving.CHUNK_ROWS):
            chunk = Dataset.from_dict({"text": texts[first:first + serving.CHUNK_ROWS]})
            inputs = data.tokenize(chunk, tokenizer, trained.max_length, trained.truncation)
            predicted.append(logits(inputs).argmax(-1))
        seconds = time.perf_counter() - start
    accuracy = float((logits(test).argmax(-1) == np.asarray(test["label"])).mean())
    return {"path": path, "load_seconds": loaded, "rows_per_second": len(texts) / seconds,
            "peak_memory_mb": memory["peak_memory_mb"], "accuracy": accuracy,
            "predictions": np.concatenate(predicted).tolist()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, default=ROOT / "model" / "lora-adapter", help="trained adapter")
    parser.add_argument("--rows", type=int, default=10_000, help="tweets of the corpus to classify")
    parser.add_argument("--one", nargs=2, metavar=("PATH", "FOLDER"), help=argparse.SUPPRESS)  # a child's job
    args = parser.parse_args(argv)
    if not (args.adapter / "adapter_config.json").is_file():
        parser.error(f"no adapter in {args.adapter}: train one (python -m lora_ft train) or pass --adapter")
    texts = pd.read_csv(sources.tweets_path(), encoding="latin-1")["text"].astype(str).tolist()
    texts = [texts[i % len(texts)] for i in range(args.rows)]
    splits, _ = data.load_prepared()
    if args.one:
        path, folder = args.one
        name = {"bf16": None, "onnx-fp32": "model.onnx", "onnx-int8": "model-int8.onnx"}[path]
        model_file = None if name is None else Path(folder) / name
        print(json.dumps(serve(path, args.adapter, model_file, texts, splits["test"])))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        files = export_onnx(args.adapter, Path(tmp))
        rows = []
        for path in PATHS:  # a fresh process each: memory and thread pools start from nothing
            done = subprocess.run([sys.executable, __file__, "--adapter", str(args.adapter), "--rows", str(args.rows),
                                   "--one", path, tmp], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{path} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        sizes = {path: round(files[path].stat().st_size / 1e6, 1) for path in files}
    base = Path(resolve_model(saved_adapter(args.adapter)[0].model))  # what predict reads: the base and the adapter
    sizes["bf16"] = round(sum(f.stat().st_size for f in base.glob("*.safetensors")) / 1e6 + folder_mb(args.adapter), 1)
    reference = rows[0]["predictions"]
    for row in rows:
        predictions = row.pop("predictions")
        row["same_predictions"] = float(np.mean(np.array(predictions) == np.array(reference)))
        row["model_mb"] = sizes[row["path"]]
    write_json_atomic(OUTPUT, {"paths": rows, "rows": args.rows, "test_examples": len(splits["test"]),
                               "threads": torch.get_num_threads(), "meta": meta(Config(smoke=False))})
    print(f"wrote {OUTPUT.relative_to(ROOT)}\n\n{report.onnx_table(ROOT / 'results')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
