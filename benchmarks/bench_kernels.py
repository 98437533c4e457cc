"""Every kernel of the contract, cpu against the numpy reference on the same inputs.

One group per kernel and shape ("kernel:<name> <where> <shape>"), so each group reads as
cpu vs numpy at a glance. The shapes are the layers of the workloads at batch 128.
"""

import numpy as np
import pytest

import workloads as W

BACKENDS = ("cpu", "numpy")


def _layer_cases():
    """(workload, layer label, spec, input shape at batch 128) for every conv/linear/pool."""
    cases = []
    for wl in W.WORKLOADS.values():
        counts = {}
        shapes = wl.shapes()
        for i, (spec, in_shape, _) in enumerate(shapes):
            kind = spec[0]
            if kind not in ("conv", "linear", "pool"):
                continue
            counts[kind] = counts.get(kind, 0) + 1
            # a ReLU right after conv/linear is fused into its kernels, as the model does
            relu = kind != "pool" and i + 1 < len(shapes) and shapes[i + 1][0][0] == "relu"
            cases.append((wl.name, f"{kind}{counts[kind]}", spec, (W.BATCH, *in_shape), relu))
    return cases


def _dedupe(cases):
    """Layers with the same shape in several workloads (fc 128->10 ...) are timed once."""
    seen, out = set(), []
    for case in cases:
        key = (case[2], case[3], case[4])
        if key not in seen:
            seen.add(key)
            out.append(case)
    return out


LAYERS = _dedupe(_layer_cases())


def _inputs(spec, x_shape, relu, rng):
    """Inputs for a layer's forward and backward kernels, computed with the numpy reference."""
    from fastnn import backends

    ref = backends.get("numpy")
    x = rng.random(x_shape, dtype=np.float32)
    kind = spec[0]
    if kind == "linear":
        w, b = W.Workload("one", (spec,), x_shape[1:]).initial_params()[0]
        y = ref.linear_forward(x, w, b, relu=relu)
        return dict(x=x, w=w, b=b, y=y, dy=rng.standard_normal(y.shape, dtype=np.float32))
    if kind == "conv":
        w, b = W.Workload("one", (spec,), x_shape[1:]).initial_params()[0]
        b = rng.standard_normal(b.shape).astype(np.float32)
        y = ref.conv2d_forward(x, w, b, padding=spec[4], relu=relu)
        return dict(x=x, w=w, b=b, y=y, dy=rng.standard_normal(y.shape, dtype=np.float32))
    y, argmax = ref.maxpool2d_forward(x, spec[1])
    return dict(x=x, y=y, argmax=argmax, dy=rng.standard_normal(y.shape, dtype=np.float32))


def _layer_flops(spec, x_shape, relu, backward):
    wl = W.Workload("one", (spec,), x_shape[1:])
    macs = wl.layer_macs()[0] * x_shape[0]
    return 2 * macs * (2 if backward else 1)


def _group(kernel, workload, label, spec, x_shape, relu):
    shape = "x".join(map(str, x_shape))
    if spec[0] == "linear":
        detail = f"{shape}->{spec[2]}"
    elif spec[0] == "conv":
        detail = f"{shape} -> {spec[2]}ch {spec[3]}x{spec[3]} pad{spec[4]}"
    else:
        detail = f"{shape} k{spec[1]}"
    return f"kernel:{kernel} {workload}/{label} {detail}{' +relu' if relu else ''}"


@pytest.fixture(params=BACKENDS)
def backend(request):
    from fastnn import backends

    try:
        return backends.get(request.param)
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))


def _layer_ids(case):
    return f"{case[0]}-{case[1]}"


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("case", LAYERS, ids=_layer_ids)
def test_layer_kernel(benchmark, record, backend, case, direction):
    workload, label, spec, x_shape, relu = case
    a = _inputs(spec, x_shape, relu, np.random.default_rng(0))
    kind = spec[0]
    if kind == "linear":
        kernel = f"linear_{direction}"
        if direction == "forward":
            run = lambda: backend.linear_forward(a["x"], a["w"], a["b"], relu=relu)  # noqa: E731
        else:
            run = lambda: backend.linear_backward(a["x"], a["w"], a["y"], a["dy"], relu=relu)  # noqa: E731
    elif kind == "conv":
        kernel = f"conv2d_{direction}"
        pad = spec[4]
        if direction == "forward":
            run = lambda: backend.conv2d_forward(a["x"], a["w"], a["b"], padding=pad, relu=relu)  # noqa: E731
        else:
            run = lambda: backend.conv2d_backward(
                a["x"],
                a["w"],
                a["y"],
                a["dy"],
                padding=pad,  # noqa: E731
                relu=relu,
            )
    else:
        kernel = f"maxpool2d_{direction}"
        k = spec[1]
        if direction == "forward":
            run = lambda: backend.maxpool2d_forward(a["x"], k)  # noqa: E731
        else:
            run = lambda: backend.maxpool2d_backward(a["dy"], a["argmax"], a["x"].shape, k)  # noqa: E731
    benchmark.group = _group(kernel, workload, label, spec, x_shape, relu)
    benchmark(run)
    flops = None if kind == "pool" else _layer_flops(spec, x_shape, relu, direction == "backward")
    record(flops=flops, backend=backend.name)


def test_softmax_cross_entropy(benchmark, record, backend):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((W.BATCH, 10), dtype=np.float32)
    labels = rng.integers(0, 10, W.BATCH)
    benchmark.group = f"kernel:softmax_cross_entropy {W.BATCH}x10"
    benchmark(backend.softmax_cross_entropy, logits, labels)
    record(backend=backend.name)


# One optimizer step over every parameter of a model, as the trainer does it.
OPT_MODELS = ("mlp-512-256", "cnn")


@pytest.mark.parametrize("workload", OPT_MODELS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_step(benchmark, record, backend, workload, optimizer):
    wl = W.WORKLOADS[workload]
    rng = np.random.default_rng(0)
    params = [p.copy() for pair in wl.initial_params() for p in pair]
    grads = [rng.standard_normal(p.shape, dtype=np.float32) * 1e-3 for p in params]
    state1 = [np.zeros_like(p) for p in params]
    state2 = [np.zeros_like(p) for p in params]
    count = sum(p.size for p in params)
    if optimizer == "sgd":

        def run():
            for p, g, v in zip(params, grads, state1):
                backend.sgd_step(p, g, v, lr=W.LR, momentum=W.MOMENTUM)
    else:

        def run():
            for p, g, m, v in zip(params, grads, state1, state2):
                backend.adam_step(p, g, m, v, lr=1e-3, step=10)

    benchmark.group = (
        f"kernel:{optimizer}_step {workload} ({len(params)} tensors, {count:,} params)"
    )
    benchmark(run)
    record(backend=backend.name, parameters=count)
