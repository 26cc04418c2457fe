"""Grouped training: same numbers alone or in a group, same as the plain engine, members independent."""

import pytest

from mnistlab.data import load_tensors
from mnistlab.engine.group import fit_group, group_key
from mnistlab.engine.options import EngineOptions
from mnistlab.runner.planning import plan
from mnistlab.spec import RunSpec
from mnistlab.engine.fit import Callbacks, fit

REG = ("Dense(48, activation='relu', kernel_regularizer=l2(0.001))", "BatchNormalization()",
       "Dense(10, activation='softmax')")
DROP = ("GaussianNoise(0.1)", "Dense(48, activation='relu')", "Dropout(0.3)", "Dense(10, activation='softmax')")


def run_spec(layers, optimizer="adam()", seed=1, epochs=2, batch_size=64):
    return RunSpec(study="t", model="m", layers=tuple(layers), dataset="mnist", epochs=epochs, batch_size=batch_size,
                   optimizer=optimizer, loss="categorical_crossentropy", validation="test",
                   train_size=2000, test_size=500, seed=seed)


@pytest.fixture(scope="module")
def data(mnist):
    return load_tensors("mnist", train_size=2000, test_size=500)


@pytest.mark.parametrize("optimizer", ["adam()", "sgd(learning_rate=0.05)",
                                       "sgd(learning_rate=0.05, momentum=0.9, nesterov=True)"])
@pytest.mark.parametrize("layers", [REG, DROP])
def test_group_of_one_equals_plain_engine(data, optimizer, layers):
    # both engines draw init, shuffles, dropout masks and noise alike: only float rounding differs
    spec = run_spec(layers, optimizer)
    plain, grouped = fit(spec, data), fit_group([spec], data)[0]
    for a, b in zip(plain.history, grouped.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    assert grouped.test_accuracy == pytest.approx(plain.test_accuracy, abs=0.004)
    assert grouped.weights.keys() == plain.weights.keys()  # same names: the report reads either
    assert grouped.params == plain.params


def test_members_train_as_if_alone(data):
    specs = [run_spec(DROP, f"adam(learning_rate={lr})", seed=i) for i, lr in enumerate([1e-3, 3e-3, 1e-2])]
    assert len({group_key(s) for s in specs}) == 1
    together = fit_group(specs, data)
    for spec, member in zip(specs, together):
        alone = fit_group([spec], data)[0]
        assert [r["loss"] for r in member.history] == pytest.approx([r["loss"] for r in alone.history], rel=1e-5)
        assert member.test_loss == pytest.approx(alone.test_loss, rel=1e-5)
        assert member.confusion_test == alone.confusion_test
    assert len({m.test_loss for m in together}) == 3  # and they are different runs


def test_evaluation_in_chunks_equals_one_pass(data, monkeypatch):
    import mnistlab.engine.fit as train
    specs = [run_spec(REG, seed=i, epochs=1) for i in range(3)]
    whole = fit_group(specs, data)  # the 500 test images in one batch
    budget = 4 * 784 * 3 * 120  # 120 images a batch: 5, the last short
    assert train.eval_batch(784, members=3, budget=budget) == 120
    chunked = fit_group(specs, data, options=EngineOptions(eval_bytes=budget))
    for a, b in zip(whole, chunked):
        assert b.test_loss == pytest.approx(a.test_loss, rel=1e-5) and b.confusion_test == a.confusion_test
        assert b.train_accuracy == pytest.approx(a.train_accuracy, abs=1e-9)


def test_per_member_l2_and_noise(data):
    specs = [run_spec([f"GaussianNoise({n})", f"Dense(32, activation='relu', kernel_regularizer=l2({l2}))",
                       "Dense(10, activation='softmax')"], seed=3) for n, l2 in [(0.1, 0.0001), (1.0, 0.1)]]
    assert group_key(specs[0]) == group_key(specs[1])
    small, big = fit_group(specs, data)
    assert small.test_loss == pytest.approx(fit_group([specs[0]], data)[0].test_loss, rel=1e-5)
    assert big.history[0]["loss"] > small.history[0]["loss"]  # a 1000x penalty shows in the loss


def test_diverging_member_leaves_the_others_alone(data):
    calm, wild = run_spec(REG, "sgd(learning_rate=0.05)"), run_spec(REG, "sgd(learning_rate=1e30)")
    a, b = fit_group([calm, wild], data)
    assert b.status == "diverged" and "training loss became" in b.error
    assert a.status == "done" and a.test_loss == pytest.approx(fit_group([calm], data)[0].test_loss, rel=1e-5)


def test_checkpoints_cross_engines(data):
    # a run checkpointed in a group resumes alone (and back): both engines write torch.optim's state
    spec, other = run_spec(DROP, seed=1, epochs=3), run_spec(DROP, seed=2, epochs=3)
    saved = []
    full = fit_group([spec, other], data, [Callbacks(on_epoch=lambda row, ck: saved.append(ck)), Callbacks()])[0]
    alone = fit(spec, data, resume=saved[0])
    assert [r["loss"] for r in alone.history] == pytest.approx([r["loss"] for r in full.history], rel=1e-4)
    plain_saved = []
    fit(spec, data, Callbacks(on_epoch=lambda row, ck: plain_saved.append(ck)))
    regrouped = fit_group([spec], data, resume=[plain_saved[1]])[0]
    assert regrouped.test_loss == pytest.approx(full.test_loss, rel=1e-3)


def test_group_resume_equals_uninterrupted(data):
    specs = [run_spec(DROP, seed=s, epochs=3) for s in (1, 2)]
    saved = {s.id: [] for s in specs}
    full = fit_group(specs, data, [Callbacks(on_epoch=lambda row, ck, s=s: saved[s.id].append(ck)) for s in specs])
    resumed = fit_group(specs, data, resume=[saved[s.id][0] for s in specs])
    for a, b in zip(full, resumed):
        assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
        assert a.test_loss == b.test_loss


def test_what_groups_and_what_does_not():
    mlp = run_spec(REG)
    assert group_key(mlp) == group_key(run_spec(REG, "adam(learning_rate=0.01)", seed=9))
    assert group_key(mlp) != group_key(run_spec(REG, "sgd()"))  # another optimizer kind
    assert group_key(mlp) != group_key(run_spec(REG, batch_size=32))  # another batch schedule
    assert group_key(run_spec(REG, "rmsprop()")) is None
    assert group_key(run_spec(["Conv2D(4, 3)", "Flatten()", "Dense(10, activation='softmax')"])) is None
    specs = [run_spec(REG, seed=1), run_spec(REG, "rmsprop()"), run_spec(REG, seed=2)]
    assert [[s.seed for s in g] for g in plan(specs)] == [[1, 2], [1]]
    assert [len(g) for g in plan(specs, group=False)] == [1, 1, 1]


def test_groups_shrink_to_fit_the_machines_memory(monkeypatch):
    """Up to 32 runs train as one group; each member holds its own weights, optimizer state and
    activations, so a model that fits alone could exhaust memory 32 times over. Before, groups
    were always 32."""
    from mnistlab.engine import cost, memory
    from mnistlab.runner import planning
    specs = [run_spec(REG, seed=i) for i in range(40)]
    one, two = cost.peak_bytes(specs[:1]), cost.peak_bytes(specs[:2])
    per = two - one
    monkeypatch.setattr(memory, "memory_bytes", lambda: 10**15)
    assert [len(g) for g in plan(specs)] == [32, 8]
    monkeypatch.setattr(memory, "memory_bytes", lambda: int((one + 4.5 * per) / planning.MEMORY_SHARE))
    assert [len(g) for g in plan(specs)] == [5] * 8  # the first member and 4.5 more: 5 fit
    assert cost.peak_bytes(plan(specs)[0]) <= planning.MEMORY_SHARE * memory.memory_bytes()
    monkeypatch.setattr(memory, "memory_bytes", lambda: one // 2)  # not even one: lone runs (the check refuses them)
    assert [len(g) for g in plan(specs)] == [1] * 40
    monkeypatch.setattr(memory, "memory_bytes", lambda: None)  # unknown: as before
    assert [len(g) for g in plan(specs)] == [32, 8]


def test_several_workers_take_the_longest_runs_first():
    """With several workers (``run -j N``, Ray), a long run planned last would train alone at the end
    while the others idle: the plan for them puts the most multiply-adds first, ties in study order."""
    from mnistlab.engine import cost
    small = [run_spec(REG, "rmsprop()", seed=i) for i in range(3)]  # rmsprop does not group: one run each
    cnn = run_spec(["Conv2D(32, 3, activation='relu')", "Flatten()", "Dense(10, activation='softmax')"])
    wide = run_spec(["Dense(300, activation='relu')", "Dense(10, activation='softmax')"], "rmsprop()")
    grouped = [run_spec(DROP, seed=i) for i in range(3)]  # one group of three
    specs = [*small[:2], wide, *grouped, cnn, small[2]]
    work = {id(s): cost.macs_per_run(s) for s in specs}
    assert work[id(cnn)] > work[id(wide)] > 3 * work[id(grouped[0])] > work[id(small[0])]  # what the test relies on
    assert [[s.seed for s in g] for g in plan(specs)] == [[0], [1], [1], [0, 1, 2], [1], [2]]  # study order
    longest = plan(specs, longest_first=True)
    assert [g[0].layers for g in longest] == [cnn.layers, wide.layers, DROP, REG, REG, REG]
    assert [g[0].seed for g in longest[3:]] == [0, 1, 2]  # equal work: study order
    assert sorted(s.seed for s in longest[2]) == [0, 1, 2]


def test_several_workers_order_resumed_runs_by_the_work_they_have_left():
    """A big CNN interrupted near its end was still dealt first, by its whole multiply-adds, while a
    run with more work left waited for it: the order counts only the epochs left to train."""
    from mnistlab.engine import cost
    cnn = run_spec(["Conv2D(32, 3, activation='relu')", "Flatten()", "Dense(10, activation='softmax')"], epochs=10)
    wide = run_spec(["Dense(300, activation='relu')", "Dense(10, activation='softmax')"], "rmsprop()", epochs=10)
    assert 0.1 * cost.macs_per_run(cnn) < cost.macs_per_run(wide) < cost.macs_per_run(cnn)  # what the test relies on
    assert [g[0] for g in plan([wide, cnn], longest_first=True)] == [cnn, wide]
    assert [g[0] for g in plan([wide, cnn], longest_first=True, done={cnn.id: 9})] == [wide, cnn]  # 1 epoch left
    assert [g[0] for g in plan([wide, cnn], longest_first=True, done={wide.id: 5})] == [cnn, wide]
