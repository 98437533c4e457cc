"""fastnn.profile: the structure of its report (layers, fused rows, shapes, FLOP rates), that it
leaves the model and the optimizer as they were, and its argument checks. Timings are not
asserted: speed lives in benchmarks/."""

import io

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim
from fastnn.profiler import Profile

BACKENDS = [name for name, ok in fastnn.backends.available().items() if ok and name != "cuda"]


def data(n=64, shape=(28, 28), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n)


def mlp():
    fastnn.seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn():
    fastnn.seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 12 * 12, 10)
    )


def test_mlp_rows_follow_the_executed_layers(backend):
    x, y = data()
    out = io.StringIO()
    report = fastnn.profile(
        mlp(), x, y, backend=backend, batch_size=16, steps=2, warmup=1, file=out
    )
    assert isinstance(report, Profile)
    names = [r["name"] for r in report.rows]
    # the ReLU is fused into the Linear before it: one row, one kernel
    assert names == ["Flatten()", "Linear(784, 32)+ReLU", "Linear(32, 10)"]
    assert [r["output_shape"] for r in report.rows] == [(784,), (32,), (10,)]
    flatten, hidden, last = report.rows
    assert flatten["backward_ms"] is None  # nothing before the first weights needs a gradient
    assert flatten["forward_gflops"] is None
    for row in (hidden, last):
        assert row["forward_ms"] > 0 and row["backward_ms"] > 0
        assert row["forward_gflops"] > 0 and row["backward_gflops"] > 0
    assert report.loss_ms > 0 and report.optimizer_ms > 0 and report.step_ms > 0
    assert sum(r["share"] for r in report.rows) < 1.0
    assert report.epoch_s == pytest.approx(4 * report.step_ms / 1e3)  # 64 samples, batch 16
    text = out.getvalue()
    assert text == str(report) + "\n"
    for expected in [
        "fwd ms",
        "bwd ms",
        "GFLOP/s",
        "Linear(784, 32)+ReLU",
        "softmax cross-entropy",
        "optimizer step",
        f"backend {backend.name}",
        "batch 16",
    ]:
        assert expected in text


def test_cnn_rows_and_shapes(backend):
    x, y = data()
    report = fastnn.profile(
        cnn(), x, y, backend=backend, batch_size=8, steps=1, warmup=0, print_table=False
    )
    if backend.name == "cpu":  # the max-pool runs inside the conv's kernel: one row
        assert [r["name"] for r in report.rows] == [
            "Conv2d(1, 4, kernel_size=5)+ReLU+MaxPool2d(kernel_size=2)",
            "Flatten()",
            "Linear(576, 10)",
        ]
        assert [r["output_shape"] for r in report.rows] == [(4, 12, 12), (576,), (10,)]
    else:
        assert [r["name"] for r in report.rows] == [
            "Conv2d(1, 4, kernel_size=5)+ReLU",
            "MaxPool2d(kernel_size=2)",
            "Flatten()",
            "Linear(576, 10)",
        ]
        assert [r["output_shape"] for r in report.rows] == [(4, 24, 24), (4, 12, 12), (576,), (10,)]
        pool = report.rows[1]
        assert pool["forward_gflops"] is None and pool["backward_ms"] > 0
    conv = report.rows[0]
    assert conv["forward_gflops"] > 0
    assert conv["backward_ms"] > 0  # the first layer still computes its weight gradient
    assert set(report.to_dict()) >= {"rows", "step_ms", "epoch_s", "overhead_ms", "parts_ms"}


def test_model_and_optimizer_are_left_as_they_were():
    x, y = data()
    model = mlp()
    before = model.state_dict()
    opt = optim.SGD(lr=0.1, momentum=0.5)
    fastnn.profile(model, x, y, optimizer=opt, batch_size=16, steps=2, print_table=False)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    assert opt.steps == 0
    # and the model still trains normally afterwards
    trainer = fastnn.Trainer(model, opt, backend=BACKENDS[-1] if "cpu" not in BACKENDS else "cpu")
    history = trainer.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"steps": 0}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"warmup": -1}, ValueError),
        ({"steps": 1.5}, TypeError),
        ({"optimizer": "sgd"}, TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    x, y = data(16)
    with pytest.raises(
        error, match=next(iter(kwargs)) if next(iter(kwargs)) != "optimizer" else "optimizer"
    ):
        fastnn.profile(mlp(), x, y, print_table=False, **kwargs)


def test_bad_data():
    x, y = data(16)
    with pytest.raises(ValueError, match="y must have shape"):
        fastnn.profile(mlp(), x, y[:8], print_table=False)
    with pytest.raises(TypeError, match="integer class labels"):
        fastnn.profile(mlp(), x, y.astype(np.float32), print_table=False)
    with pytest.raises(TypeError, match="Sequential"):
        fastnn.profile(object(), x, y, print_table=False)
