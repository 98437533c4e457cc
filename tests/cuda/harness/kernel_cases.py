"""Tiny-shape cases that run a backend's kernels against the NumPy reference.

Each case takes (backend, reference, rng) and returns [(label, got, expected), ...] as NumPy
arrays. The same list serves the host harness tests, the ThreadSanitizer run (run_cases.py)
and the GPU tests, so the three check the same things.
"""

import numpy as np

F32 = np.float32


def _normal(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


def _pairs(backend, names, got, expected):
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    return [(name, backend.to_numpy(g), np.asarray(e)) for name, g, e in zip(names, got, expected)]


def linear(relu, n=5, fin=7, fout=3, bias=True):
    def case(backend, ref, rng):
        x, w, b = _normal(rng, n, fin), _normal(rng, fout, fin), _normal(rng, fout)
        b = b if bias else None
        y_ref = ref.linear_forward(x, w, b, relu)
        dy = _normal(rng, n, fout)
        dev = [None if a is None else backend.asarray(a) for a in (x, w, b, dy)]
        y = backend.linear_forward(*dev[:3], relu)
        out = _pairs(backend, ["y"], y, y_ref)
        got = backend.linear_backward(dev[0], dev[1], y, dev[3], relu)
        return out + _pairs(
            backend, ["dx", "dw", "db"], got, ref.linear_backward(x, w, y_ref, dy, relu)
        )

    case.__name__ = f"linear(relu={relu}, {n}x{fin}->{fout}{'' if bias else ', no bias'})"
    return case


def conv2d(x_shape, w_shape, stride, padding, relu, bias=True):
    def case(backend, ref, rng):
        x, w, b = _normal(rng, *x_shape), _normal(rng, *w_shape), _normal(rng, w_shape[0])
        b = b if bias else None
        y_ref = ref.conv2d_forward(x, w, b, stride, padding, relu)
        dy = _normal(rng, *y_ref.shape)
        dev = [None if a is None else backend.asarray(a) for a in (x, w, b, dy)]
        y = backend.conv2d_forward(*dev[:3], stride, padding, relu)
        out = _pairs(backend, ["y"], y, y_ref)
        got = backend.conv2d_backward(dev[0], dev[1], y, dev[3], stride, padding, relu)
        return out + _pairs(
            backend,
            ["dx", "dw", "db"],
            got,
            ref.conv2d_backward(x, w, y_ref, dy, stride, padding, relu),
        )

    case.__name__ = (
        f"conv2d(x={x_shape}, w={w_shape}, stride={stride}, pad={padding}, "
        f"relu={relu}{'' if bias else ', no bias'})"
    )
    return case


def maxpool(x_shape, kernel, stride=None, ties=False, nan=False):
    def case(backend, ref, rng):
        if ties:  # few distinct values: many equal maxima, the first must win
            x = rng.integers(0, 3, size=x_shape).astype(F32)
        else:
            x = _normal(rng, *x_shape)
        if nan:
            x.reshape(-1)[rng.choice(x.size, size=max(1, x.size // 7), replace=False)] = np.nan
        y_ref, arg_ref = ref.maxpool2d_forward(x, kernel, stride, check_finite=False)
        dy = _normal(rng, *y_ref.shape)
        y, arg = backend.maxpool2d_forward(backend.asarray(x), kernel, stride, check_finite=False)
        out = _pairs(backend, ["y", "argmax"], (y, arg), (y_ref, arg_ref))
        dx = backend.maxpool2d_backward(backend.asarray(dy), arg, x_shape, kernel, stride)
        return out + _pairs(
            backend, ["dx"], dx, ref.maxpool2d_backward(dy, arg_ref, x_shape, kernel, stride)
        )

    case.__name__ = (
        f"maxpool(x={x_shape}, kernel={kernel}, stride={stride}"
        f"{', ties' if ties else ''}{', NaN' if nan else ''})"
    )
    return case


def softmax_xent(n, classes, scale=1.0):
    def case(backend, ref, rng):
        logits = _normal(rng, n, classes) * F32(scale)
        labels = rng.integers(0, classes, size=n)
        loss_ref, d_ref = ref.softmax_cross_entropy(logits, labels)
        loss, d = backend.softmax_cross_entropy(backend.asarray(logits), labels)
        return _pairs(backend, ["loss", "dlogits"], (loss, d), (loss_ref, d_ref))

    case.__name__ = f"softmax_cross_entropy({n}x{classes}, scale={scale})"
    return case


def sgd(momentum, weight_decay, nesterov, steps=3, shape=(4, 9)):
    def case(backend, ref, rng):
        p, v = _normal(rng, *shape), np.zeros(shape, F32)
        dp, dv = backend.asarray(p), backend.asarray(v)
        for _ in range(steps):
            g = _normal(rng, *shape)
            kw = dict(lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
            ref.sgd_step(p, g, v if momentum else None, **kw)
            backend.sgd_step(dp, backend.asarray(g), dv if momentum else None, **kw)
        return _pairs(backend, ["param", "velocity"], (dp, dv), (p, v))

    case.__name__ = f"sgd(momentum={momentum}, weight_decay={weight_decay}, nesterov={nesterov})"
    return case


def adam(weight_decay, steps=3, shape=(37,)):
    def case(backend, ref, rng):
        p, m, v = _normal(rng, *shape), np.zeros(shape, F32), np.zeros(shape, F32)
        dev = [backend.asarray(a) for a in (p, m, v)]
        for step in range(1, steps + 1):
            g = _normal(rng, *shape)
            kw = dict(lr=0.01, step=step, weight_decay=weight_decay)
            ref.adam_step(p, g, m, v, **kw)
            backend.adam_step(dev[0], backend.asarray(g), dev[1], dev[2], **kw)
        return _pairs(backend, ["param", "m", "v"], tuple(dev), (p, m, v))

    case.__name__ = f"adam(weight_decay={weight_decay})"
    return case


def step_many(kind, momentum=0.9, steps=3, shapes=((4, 9), (7,), (1,), (3, 2, 2))):
    """sgd_step_many / adam_step_many over parameters of several sizes (one launch each step)."""

    def case(backend, ref, rng):
        params = [_normal(rng, *s) for s in shapes]
        states = [[np.zeros(s, F32) for s in shapes] for _ in range(1 if kind == "sgd" else 2)]
        dev_params = [backend.asarray(p) for p in params]
        dev_states = [[backend.asarray(a) for a in group] for group in states]
        grads = [backend.asarray(np.zeros(s, F32)) for s in shapes]  # kept, as a layer's are
        for step in range(1, steps + 1):
            host_grads = [_normal(rng, *s) for s in shapes]
            for g, h in zip(grads, host_grads):
                g[...] = backend.asarray(h)
            if kind == "sgd":
                kw = dict(lr=0.1, momentum=momentum, weight_decay=1e-2, nesterov=bool(momentum))
                ref.sgd_step_many(params, host_grads, states[0] if momentum else None, **kw)
                backend.sgd_step_many(dev_params, grads, dev_states[0] if momentum else None, **kw)
            else:
                kw = dict(lr=0.01, step=step, weight_decay=1e-2)
                ref.adam_step_many(params, host_grads, *states, **kw)
                backend.adam_step_many(dev_params, grads, *dev_states, **kw)
        names = [f"param{i}" for i in range(len(shapes))]
        return _pairs(backend, names, tuple(dev_params), tuple(params))

    case.__name__ = f"{kind}_step_many(momentum={momentum})" if kind == "sgd" else "adam_step_many"
    return case


def gather(samples=9, sample_shape=(2, 5), rows=6):
    """The training loop's batch gather (batch_gatherer): rows of x and their labels."""

    def case(backend, ref, rng):
        x = _normal(rng, samples, *sample_shape)
        y = rng.integers(0, 10, size=samples)
        index = rng.permutation(samples)[:rows]
        dev_x, dev_y = backend.asarray(x), backend.asarray(y)
        x_out = backend.asarray(np.zeros((rows + 2, *sample_shape), F32))
        y_out = backend.asarray(np.zeros(rows + 2, np.int64))
        xb, yb = backend.batch_gatherer(dev_x, dev_y, x_out, y_out)(backend.asarray(index))
        return _pairs(backend, ["xb", "yb"], (xb, yb), (x[index], y[index]))

    case.__name__ = f"gather(samples={samples}, rows={rows})"
    return case


CASES = [
    linear(False),
    linear(True),
    linear(True, n=1, fin=3, fout=300),
    linear(True, bias=False),
    linear(False, bias=False),
    linear(True, n=300, fin=5, fout=37),
    conv2d((2, 3, 6, 5), (4, 3, 3, 2), 1, 1, True),
    conv2d((2, 2, 7, 7), (3, 2, 3, 3), 2, 0, False),
    conv2d((1, 3, 4, 4), (2, 3, 1, 1), 1, 0, True),
    conv2d((2, 1, 5, 6), (2, 1, 5, 5), 3, 2, True),
    conv2d((1, 2, 5, 5), (3, 2, 3, 3), 1, 0, True, bias=False),
    maxpool((2, 3, 6, 6), 2),
    maxpool((2, 2, 7, 7), 3, 2),
    maxpool((1, 2, 5, 8), 2, 1),
    maxpool((2, 3, 6, 6), 2, ties=True),
    maxpool((2, 2, 6, 6), 3, 1, nan=True),
    softmax_xent(5, 7),
    softmax_xent(3, 300),
    softmax_xent(4, 10, scale=1000.0),
    softmax_xent(1, 1),
    softmax_xent(300, 10),
    softmax_xent(3, 40),
    sgd(0.0, 0.0, False),
    sgd(0.9, 0.0, False),
    sgd(0.9, 1e-2, True),
    sgd(0.0, 1e-2, False),
    adam(0.0),
    adam(1e-2),
    step_many("sgd"),
    step_many("sgd", momentum=0.0),
    step_many("adam"),
    gather(),
    gather(samples=3, sample_shape=(1, 1, 4), rows=3),
]


def compare(label, got, expected, rtol=2e-5, atol=2e-6):
    """None if got matches expected (same shape and dtype, close values, NaN where NaN),
    else a line saying how it differs."""
    if got.shape != expected.shape:
        return f"{label}: shape {got.shape}, expected {expected.shape}"
    if got.dtype != expected.dtype:
        return f"{label}: dtype {got.dtype}, expected {expected.dtype}"
    if not np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True):
        diff = np.abs(got.astype(np.float64) - expected)
        return (
            f"{label}: differs by up to {np.nanmax(diff):.3g} "
            f"(max |expected| {np.nanmax(np.abs(expected)):.3g})"
        )
    return None


def run(case, backend, ref, seed=0):
    """A list of mismatch lines for one case (empty when it passes)."""
    rng = np.random.default_rng(seed)
    problems = []
    for label, got, expected in case(backend, ref, rng):
        problem = compare(label, got, expected)
        if problem:
            problems.append(problem)
    return problems
