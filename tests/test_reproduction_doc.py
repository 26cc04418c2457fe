"""docs/REPRODUCTION.md cannot fall behind the built-in seed studies: it names every model of each."""

from pathlib import Path

import pytest

from mnistlab.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
SEED_STUDIES = sorted((ROOT / "studies").glob("seed0*.toml"))


def test_there_are_seed_studies():
    assert len(SEED_STUDIES) >= 5


@pytest.mark.parametrize("path", SEED_STUDIES, ids=lambda p: p.stem)
def test_reproduction_names_every_model_and_its_study(path):
    doc = (ROOT / "docs" / "REPRODUCTION.md").read_text()
    study = load_study(path)
    assert path.name in doc, f"docs/REPRODUCTION.md does not link {path.name}"
    missing = [m.name for m in study.models if m.name not in doc]
    assert not missing, f"docs/REPRODUCTION.md has no row for {missing} of {path.name}"
