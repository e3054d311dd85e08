"""docs/model-card.md shows the card the committed full run's records give (lora_ft.card.of_record)."""

import re

from lora_ft import card
from lora_ft.config import ROOT

DOC = ROOT / "docs" / "model-card.md"
EXAMPLE = re.compile(r"(````markdown\n)(.*?)(````\n)", re.S)


def shown() -> str:
    return EXAMPLE.search(DOC.read_text(encoding="utf-8"))[2]


def render() -> str:
    """docs/model-card.md with its example made again from results/ (what `python -m lora_ft.card` would write)."""
    text = DOC.read_text(encoding="utf-8")
    return EXAMPLE.sub(lambda m: m[1] + card.of_record(ROOT / "results") + m[3], text, count=1)


def test_the_documented_card_is_the_committed_runs():
    assert shown() == card.of_record(ROOT / "results"), (
        "docs/model-card.md's example is stale: python -c 'import tests.test_model_card as t; "
        "t.DOC.write_text(t.render())'")


def test_the_card_names_the_runs_settings_and_scores():
    made = card.of_record(ROOT / "results")
    record = card.read(ROOT / "results" / "lora.json")
    assert "library_name: peft" in made and "base_model: sentence-transformers/all-MiniLM-L6-v2" in made
    assert f"| this model (LoRA) | {record['metrics']['accuracy']:.4f} |" in made
    assert "'query', 'value']" in made and "trained in full: `['pooler', 'classifier']`" in made
