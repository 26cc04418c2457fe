"""mnistlab.load_study: every layer, optimizer and dataset a study names is checked before training."""

import textwrap

import pytest

import mnistlab
from mnistlab.spec import StudyError


def load(tmp_path, layers, optimizer="adam", dataset="mnist"):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(f"""\
        name = "s"
        dataset = "{dataset}"
        [train]
        optimizer = "{optimizer}"
        [[model]]
        name = "m"
        layers = [
        """) + "".join(f'  "{layer}",\n' for layer in layers) + "]\n")
    return mnistlab.load_study(path)


def error(tmp_path, *args, **kwargs) -> str:
    with pytest.raises(StudyError) as info:
        load(tmp_path, *args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


OUT = "Dense(10, activation='softmax')"


def test_a_good_study_loads(tmp_path):
    study = load(tmp_path, ["Conv2D(8, (3, 3), activation='relu')", "MaxPooling2D()", "Flatten()", OUT])
    assert study.models[0].layers[-1] == OUT


@pytest.mark.parametrize("layers,expected", [
    (["Dence(64)", OUT], "s.toml:8: model 'm': layer 1 'Dence(64)': unknown layer 'Dence'; did you mean 'Dense'?"),
    (["Dense(unit=64)", OUT], "layer 1 'Dense(unit=64)': Dense got unexpected argument 'unit'; did you mean 'units'?"),
    (["Dense(64, activation='rleu')", OUT], "unknown activation 'rleu'; did you mean 'relu'?"),
    (["Dropout(1.5)", OUT], "rate is the fraction dropped and must be in [0, 1), got 1.5"),
    (["Flatten()", "Conv2D(8, 3)", OUT], "layer 2 'Conv2D(8, 3)': Conv2D needs an image input"),
    (["Dense(64)", "Dense(7, activation='softmax')"], "the last layer outputs 7 values; a 10-class dataset needs"),
    (["Conv2D(8, 3)", "MaxPooling2D((2, 2))", "Conv2D(8, 30)", "Flatten()", OUT], "layer 3 'Conv2D(8, 30)'"),
])
def test_layer_errors_name_file_model_and_layer(tmp_path, layers, expected):
    message = error(tmp_path, layers)
    assert message.startswith(str(tmp_path / "s.toml")) and expected in message, message


def test_unknown_optimizer_and_argument(tmp_path):
    assert "did you mean 'adam'" in error(tmp_path, ["Dense(64)", OUT], optimizer="adamm")
    assert "learning_rat" in error(tmp_path, ["Dense(64)", OUT], optimizer="SGD(learning_rat=0.1)")


def test_unknown_dataset(tmp_path):
    assert "dataset 'minst' is unknown; did you mean 'mnist'?" in error(tmp_path, [OUT], dataset="minst")
