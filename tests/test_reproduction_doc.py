"""docs/REPRODUCTION.md cannot fall behind the built-in seed studies: it names every model of each."""

import re
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


DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


def local_links(text: str) -> list[str]:
    """Markdown link and image targets that name a file of this repository (not a URL or an anchor)."""
    return [t.split("#", 1)[0] for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


def test_local_links_finds_images_and_files_only():
    text = "![a](img/x.png) [b](../studies/s.toml#L3) [c](https://x.org/y) [d](#anchor) [e](mailto:a@b)"
    assert local_links(text) == ["img/x.png", "../studies/s.toml"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_local_link_and_screenshot_exists(doc):
    """A renamed study or a screenshot left out of a commit would show as a broken link or image."""
    missing = [t for t in local_links(doc.read_text()) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links files that do not exist: {missing}"


MENTIONED = re.compile(r"(?<![\w/.])((?:studies|docs/experiments)/[\w./-]+\.(?:toml|py))")


def test_mentioned_finds_repository_paths_only():
    text = "run studies/quick.toml, docs/experiments/x.py and `ROOT/studies/y.toml` or ../studies/z.toml"
    assert MENTIONED.findall(text) == ["studies/quick.toml", "docs/experiments/x.py"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_study_and_experiment_a_command_names_exists(doc):
    """Commands in code blocks are not links: a study renamed since would fail only when a user types it."""
    missing = sorted({p for p in MENTIONED.findall(doc.read_text()) if not (ROOT / p).exists()})
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"


def test_seed001_rows_quote_the_histories_kept_in_git():
    """The store that trained seed 001 lives outside the work tree, and one was lost with its machine:
    its per-epoch histories are kept in git, every epoch of every model, and each row's bold test
    accuracy is its run's last epoch there (the document cannot drift from the record)."""
    import csv
    study = load_study(ROOT / "studies" / "seed001_cnn_optimizers.toml")
    with open(ROOT / "docs" / "experiments" / "seed001_history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    rows = (ROOT / "docs" / "REPRODUCTION.md").read_text().splitlines()
    for model in study.models:
        epochs = [h for h in history if h["model"] == model.name]
        assert [int(h["epoch"]) for h in epochs] == list(range(1, study.train.epochs + 1)), model.name
        assert len({h["run"] for h in epochs}) == 1
        verdicts = [r for r in rows if r.startswith(f"| {model.name} |") and "**" in r]  # not `table`'s copy
        assert len(verdicts) == 1, model.name
        bold = re.findall(r"\*\*(0\.\d{4})\*\*", verdicts[0])
        assert bold and bold[0] == f"{float(epochs[-1]['val_accuracy']):.4f}", (model.name, bold)
