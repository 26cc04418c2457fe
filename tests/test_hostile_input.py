"""Hostile but fair input: markup in names, odd templates, huge sweeps, models too large to train.

Each case failed on the code before it was fixed: a rich MarkupError mid-study, a KeyError or
ValueError traceback, silently accepted format specs, minutes of validation, an allocation crash.
"""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mnistlab
from mnistlab.errors import StudyError
from mnistlab.spec import MAX_RUNS, count_runs, expand, parse_study

MODEL = "m[/bold] [link=http://x]x"            # closing tag without opening, a link: both markup to rich
LABEL = f"{MODEL} [units=64]"                   # the grid point in brackets, as tables show it
SRC = str(Path(mnistlab.__file__).parent.parent)


def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="250")  # wide: rich must not wrap the names asserted on
    return subprocess.run([sys.executable, "-m", "mnistlab.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def hostile_study(write_study):
    return write_study(f"""\
        name = "host[/bold]ile"
        [train]
        epochs = 1
        batch_size = 64
        train_size = 500
        test_size = 200
        [[model]]
        name = "{MODEL}"
        layers = ["Dense({{units}}, activation='relu')", "Dense(10, activation='softmax')"]
        [sweep]
        units = [64]
        """)


# ---- 1. user text is printed, never parsed as markup

def test_markup_in_names_is_printed_literally_by_every_command(write_study, mnist, monkeypatch):
    path = hostile_study(write_study)
    done = cli("run", path, cwd=path.parent)   # the real command: the old code crashed here, the run left running
    assert done.returncode == 0, done.stderr
    assert f"{LABEL} r0 epoch 1/1" in done.stderr                              # progress lines keep [units=64]
    assert f"done {LABEL}: test accuracy" in done.stderr
    assert LABEL in done.stdout and "study host[/bold]ile" in done.stdout
    assert [r["status"] for r in mnistlab.Store.for_study(path).runs(study="host[/bold]ile")] == ["done"]

    from typer.testing import CliRunner

    from mnistlab.cli import app
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(path.parent)

    def read(*args):  # the read commands in this process: no torch import per command
        result = CliRunner().invoke(app, [*map(str, args)])
        assert result.exit_code == 0, result.output
        return result.stdout

    runs = read("ls", path)
    assert LABEL in runs and "host[/bold]ile" in read("ls")
    run_id = runs.split(LABEL)[1].split()[1]     # "│ label │ 9a6a6ed1 │": the id cell after the label
    assert f"{LABEL}  status: done" in read("show", run_id)
    assert LABEL in read("table", path) and LABEL in read("summary", path)


def test_markup_in_names_survives_error_messages(write_study):
    path = write_study(f'name = "s"\n[[model]]\nname = "{MODEL}"\nlayers = ["Dence({{units}})", "Dense(10)"]\n'
                       "[sweep]\nunits = [64]\n")
    done = cli("summary", path, cwd=path.parent)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"model '{MODEL}' [units=64]: layer 1 'Dence({{units}})': unknown layer 'Dence'" in done.stderr


def test_live_progress_shows_labels_with_brackets(monkeypatch, write_study):
    """On a terminal the progress bar's description is markup too; the old code crashed rendering it."""
    from rich.console import Console

    from mnistlab import console as cli_module
    console = Console(file=io.StringIO(), force_terminal=True, width=200, record=True)
    monkeypatch.setattr(cli_module, "err", console)
    spec = expand(mnistlab.spec.load_study(hostile_study(write_study)))[0]
    reporter = cli_module._Reporter(quiet=False)
    assert reporter.live
    reporter.study_started(1, 0)
    reporter.run_started([spec], 0)
    reporter.epoch(spec, {"epoch": 1, "loss": 0.5, "accuracy": 0.9, "seconds": 1.0})
    reporter.run_finished(spec, "failed", "ValueError: [red]x[/red]")
    reporter.close()
    text = console.export_text()
    assert f"{LABEL} r0 epoch 1/1 loss 0.5000" in text and f"{LABEL}: ValueError: [red]x[/red]" in text


# ---- 2. layer-string templates admit {name}, {{ and }} only

BASE = """\
name = "t"
[[model]]
name = "m"
layers = ["Dense({units})", "Dense(10, activation='softmax')"]
[sweep]
units = [64, 128]
"""


@pytest.mark.parametrize("template", ["{units.__class__}", "{units[0]}", "{units!r}", "{units:>5}", "{units",
                                      "units}", "{}", "{0}", "{ units }"])
def test_templates_other_than_plain_names_are_refused(template):
    layer = f"Dense({template})"
    with pytest.raises(StudyError) as info:
        parse_study(BASE.replace("Dense({units})", layer), "s.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"s.toml:4: model 'm', layer 1 {layer!r}: ")
    assert "plain names like {units}" in message and "{{ or }} for a literal brace" in message


def test_plain_names_and_escaped_braces_are_filled():
    from mnistlab.spec.template import fill, names
    assert names("Dense({units}, name='a{{b}}')") == ["units"]
    assert fill("Dense({units}, name='a{{b}}')", {"units": 64}) == "Dense(64, name='a{b}')"
    assert fill("GaussianNoise({s})", {"s": 0.1}) == "GaussianNoise(0.1)"
    assert [r.layers[0] for r in expand(parse_study(BASE))] == ["Dense(64)", "Dense(128)"]


# ---- 3. and 4. models too large for memory: refused at validation with their size, no traceback

def big_study(write_study, layer, batch_size=128):
    return write_study(f'name = "big"\n[train]\nbatch_size = {batch_size}\n[[model]]\nname = "huge"\n'
                       f'layers = ["{layer}", "Flatten()", "Dense(10, activation=\'softmax\')"]\n')


def test_summary_of_a_model_too_large_to_allocate_is_one_line(write_study):
    path = big_study(write_study, "Dense(1000000000000, activation='relu')")
    done = cli("summary", path, cwd=path.parent)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    line, = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}:6: model 'huge': layer 1 \"Dense(1000000000000, activation='relu')\"")
    assert "795,000,000,000,010 parameters" in line and " GB of memory to train" in line


@pytest.mark.parametrize("layer", [
    "Dense(1000000000000)",                                # its weights: 12,560,000 GB
    "Conv2D(1000000, (3, 3), input_shape=(28, 28, 1))",    # 10^7 parameters, but 1,038 GB of outputs a batch
])
def test_models_that_cannot_fit_are_refused_with_their_size(write_study, layer):
    with pytest.raises(StudyError) as info:
        mnistlab.load_study(big_study(write_study, layer))
    message = str(info.value)
    assert f"model 'huge': layer 1 {layer!r}: the model needs about " in message
    gigabytes = float(message.split("this layer alone ")[1].split(" GB")[0].replace(",", ""))
    assert gigabytes > 1000


def test_memory_estimate_counts_parameter_copies_and_batch_outputs():
    from mnistlab.engine.layers import build_model
    from mnistlab.engine.memory import DATA_BYTES, check_fits, layer_bytes
    from mnistlab.errors import LayerError
    from mnistlab.spec import parse_call
    model = build_model([parse_call("Dense(64, activation='relu')"), parse_call("Dense(10)")], device="meta")
    # 784*64+64 and 64*10+10 parameters, 4 float32 copies each; outputs 64 and 10 per image, 3 copies, batch 128
    assert layer_bytes(model, 128) == [4 * (4 * 50240 + 3 * 128 * 64), 4 * (4 * 650 + 3 * 128 * 10)]
    total = sum(layer_bytes(model, 128)) + DATA_BYTES + 4 * 128 * 784
    check_fits(model, 128, available=total)
    with pytest.raises(LayerError) as info:
        check_fits(model, 128, available=total - 1)
    assert info.value.index == 0 and info.value.name == "dense_1"


def test_summaries_build_on_meta_with_the_same_text(write_study):
    from mnistlab.api import summaries
    from mnistlab.engine.layers import build_model, input_shape
    study = mnistlab.load_study(write_study(BASE))
    for (label, text), run in zip(summaries(study), expand(study)):
        calls = run.layer_calls()
        assert text == build_model(calls, input_shape(calls)).summary() and label == run.label


# ---- 4. sweeps: counted before anything is expanded; above MAX_RUNS only with yes

def sweep_study(points_per_key: int, keys: int = 3, repeats: int = 1, layer: str = "Dense") -> str:
    values = ", ".join(str(v + 1) for v in range(points_per_key))
    names = [f"k{i}" for i in range(keys)]
    hidden = ", ".join(f'"{layer}({{{n}}})"' for n in names)
    return (f'name = "s"\nrepeats = {repeats}\n[[model]]\nname = "m"\nlayers = [{hidden}, "Dense(10, activation=\'softmax\')"]\n'
            "[sweep]\n" + "".join(f"{n} = [{values}]\n" for n in names))


def test_a_million_point_sweep_is_refused_before_expanding(monkeypatch):
    import mnistlab.spec.schema as schema
    monkeypatch.setattr(schema, "expand", lambda study: pytest.fail("expanded before counting"))
    with pytest.raises(StudyError) as info:
        parse_study(sweep_study(100), "s.toml")
    message = str(info.value)
    assert message.startswith("s.toml:6: the study has 1,000,000 runs") and f"more than {MAX_RUNS:,}" in message
    assert "--yes" in message and "yes=True" in message


def test_yes_accepts_a_large_study_in_python_and_on_the_command_line(write_study):
    path = write_study(sweep_study(11, keys=1, repeats=1000))   # 11,000 runs of 11 architectures
    with pytest.raises(StudyError, match="11,000 runs"):
        mnistlab.load_study(path)
    assert len(expand(mnistlab.load_study(path, yes=True))) == 11_000
    refused = cli("run", path, cwd=path.parent)
    assert refused.returncode == 2 and "11,000 runs" in refused.stderr and "--yes" in refused.stderr
    # with --yes the count passes and validation goes on to the layers (an unknown one here: nothing trains)
    bad = write_study(sweep_study(11, keys=1, repeats=1000, layer="Dence"), "bad.toml")
    accepted = cli("run", bad, "--yes", cwd=path.parent)
    assert accepted.returncode == 2 and "unknown layer 'Dence'" in accepted.stderr, accepted.stderr
    assert not (path.parent / "mnistlab.db").exists()


def test_each_distinct_architecture_and_optimizer_is_checked_once(monkeypatch, write_study):
    import mnistlab.engine.check as check
    built, optimizers = [], []
    build, defaults = check.build_model, check.optimizer_defaults
    monkeypatch.setattr(check, "build_model", lambda calls, *a, **k: built.append(calls) or build(calls, *a, **k))
    monkeypatch.setattr(check, "optimizer_defaults", lambda call: optimizers.append(call) or defaults(call))
    text = (sweep_study(2, keys=1, repeats=50).replace('[sweep]', '[train]\noptimizer = "sgd"\n[sweep]')
            + '"optimizer.learning_rate" = [' + ", ".join(f"0.{i + 1:03d}" for i in range(100)) + "]\n")
    study = parse_study(text, "s.toml")
    assert sum(count_runs(study).values()) == 10_000 == len(expand(study))
    check.check_study(study)
    assert len(built) == 2 and len(optimizers) == 100
