"""Study files: parsing, errors people see, sweep/repeat expansion, run ids."""

import subprocess
import sys
import textwrap

import pytest

from mnistlab.spec.calls import CallSyntaxError, parse_call
from mnistlab.spec import StudyError, derive_seed, expand, parse_study

BASE = """
name = "t"
seed = 3
[train]
epochs = 2
optimizer = "SGD(lr=0.1)"
[[model]]
name = "mlp"
layers = ["Dense({units}, activation='relu')", "Dense(10, activation='softmax')"]
[sweep]
units = [32, 64]
"optimizer.learning_rate" = [0.01, 0.1]
"""


def study(text=BASE, path="s.toml"):
    return parse_study(textwrap.dedent(text), path)


def error(text) -> str:
    with pytest.raises(StudyError) as info:
        study(text)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_parse_call_literals_and_nested_calls():
    call = parse_call("Dense(364, activation='relu', kernel_initializer=RandomNormal(mean=0.0, stddev=0.074))")
    assert call.name == "Dense" and call.args == (364,)
    init = call.kw()["kernel_initializer"]
    assert init.name == "RandomNormal" and init.kw() == {"mean": 0.0, "stddev": 0.074}
    assert parse_call("Conv2D(16, [3, 3])").args == (16, (3, 3))  # lists become tuples: hashable
    assert parse_call(call.text()) == call  # canonical text round-trips


@pytest.mark.parametrize("text", ["Dense(10, activation=__import__('os').system('x'))", "Dense(x)",
                                  "os.system('x')", "Dense(*a)", "Dense(**k)", "lambda: 1", "Dense(10"])
def test_parse_call_admits_no_code(text):
    with pytest.raises(CallSyntaxError):
        parse_call(text)


def test_grid_is_product_of_sweeps_times_repeats():
    runs = expand(study(BASE.replace('seed = 3', 'seed = 3\nrepeats = 3')))
    assert len(runs) == 2 * 2 * 3
    assert {r.optimizer for r in runs} == {"sgd(learning_rate=0.01)", "sgd(learning_rate=0.1)"}  # lr alias folded
    assert {r.layers[0] for r in runs} == {"Dense(32, activation='relu')", "Dense(64, activation='relu')"}
    assert len({r.id for r in runs}) == len(runs)
    assert {r.seed for r in runs} == {derive_seed(3, i) for i in range(3)}


def test_ids_ignore_key_order_and_formatting():
    reordered = BASE.replace('"optimizer.learning_rate" = [0.01, 0.1]', "").replace(
        "[sweep]", '[sweep]\n"optimizer.learning_rate" = [0.1, 0.01]').replace(
        "Dense({units}, activation='relu')", "Dense( {units},activation='relu' )")
    assert sorted(r.id for r in expand(study(BASE))) == sorted(r.id for r in expand(study(reordered)))


def test_ids_change_with_anything_that_changes_training():
    base = {r.id for r in expand(study(BASE))}
    for old, new in [("epochs = 2", "epochs = 3"), ("seed = 3", "seed = 4"), ("[32, 64]", "[32, 65]")]:
        assert {r.id for r in expand(study(BASE.replace(old, new)))} != base
    renamed = {r.id for r in expand(study(BASE.replace('name = "mlp"', 'name = "other"')))}
    assert renamed == base  # a display name is not part of what trains


def test_ids_and_seeds_are_stable_across_processes():
    code = ("from mnistlab.spec import parse_study, expand; import sys; "
            "print(' '.join(r.id for r in expand(parse_study(sys.stdin.read()))))")
    ids = subprocess.run([sys.executable, "-c", code], input=BASE, capture_output=True, text=True, check=True)
    assert ids.stdout.split() == [r.id for r in expand(study(BASE))]


def test_model_overrides_and_model_sweeps():
    text = BASE.replace("[sweep]", """
[[model]]
name = "wide"
epochs = 5
batch_size = 28
optimizer = "adadelta"
layers = ["GaussianNoise({noise})", "Dense(10, activation='softmax')"]
sweep = { noise = [0.1, 1.0] }
[sweep]""")
    with pytest.raises(StudyError, match="template variable"):  # study-wide 'units' is not used by 'wide'
        study(text)
    text = text.replace("[sweep]\nunits = [32, 64]", "").replace("Dense({units}", "Dense(32").replace(
        '"optimizer.learning_rate" = [0.01, 0.1]', "")
    wide = [r for r in expand(study(text)) if r.model == "wide"]
    assert [(r.epochs, r.batch_size, r.optimizer) for r in wide] == [(5, 28, "adadelta()")] * 2
    assert [r.layers[0] for r in wide] == ["GaussianNoise(0.1)", "GaussianNoise(1.0)"]


@pytest.mark.parametrize("old,new,expected", [
    ('epochs = 2', 'epochs = -1', r"s.toml:5: train.epochs: Input should be greater than or equal to 1 \(got -1\)"),
    ('epochs = 2', 'epoch = 2', r"s.toml:5: train.epoch: unknown field; expected one of: .*epochs"),
    ('name = "mlp"', 'nme = "mlp"', r"model\[1\].nme: unknown field"),
    ('name = "t"\n', '', r"s.toml: name: required field is missing"),
    ("Dense(10, activation='softmax')", "Dense(10, activation=softmax)", r"s.toml:9: model 'mlp', layer 2 .*not a literal"),
    ("units = [32, 64]", "units = [32, 32]", r"s.toml:11: sweep 'units': values repeat"),
    ("units = [32, 64]", "units = []", r"sweep 'units': needs at least one value"),
    ("units = [32, 64]", "unit = [32, 64]", r"not a setting .* and not a template variable of model 'mlp'"),
    ('"SGD(lr=0.1)"', '"SGD(lr=0.1"', r"s.toml:6: optimizer 'SGD\(lr=0.1': not valid call syntax"),
    ('[train]', '[train', r"s.toml:4: not valid TOML"),
])
def test_errors_name_the_place_and_the_fix(old, new, expected):
    assert old in BASE
    assert pytest.importorskip("re").search(expected, error(BASE.replace(old, new, 1))), error(BASE.replace(old, new, 1))


def test_missing_template_value_is_named():
    message = error(BASE.replace("units = [32, 64]", ""))
    assert "model 'mlp' uses template variables ['units']" in message


def test_duplicate_model_names():
    assert "repeated: mlp" in error(BASE + '\n[[model]]\nname = "mlp"\nlayers = ["Dense(10)"]\n')


def test_missing_file(tmp_path):
    from mnistlab.spec import load_study
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "nope.toml")


def test_identical_models_are_an_error_not_a_silent_merge():
    twin = BASE + '\n[[model]]\nname = "twin"\nlayers = ["Dense({units}, activation=\'relu\')", "Dense(10, activation=\'softmax\')"]\n'
    assert "'twin [learning_rate=0.01, units=32]' and 'mlp [learning_rate=0.01, units=32]' resolve to the same run" in error(twin)
