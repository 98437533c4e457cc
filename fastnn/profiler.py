"""Where a training step goes: time and GFLOP/s per layer, forward and backward.

    import fastnn
    report = fastnn.profile(model, x_train, y_train)          # prints the table (fastnn.profiler)
    report.rows[0]["forward_ms"], report.step_ms, report.epoch_s

For the examples' `--profile` flag: call `fastnn.profile(model, x, y, backend=args.backend,
batch_size=args.batch_size, optimizer=<the example's optimizer config>)` before training. The
model's weights are put back afterwards, so the run that follows is unchanged; optimizer state
lives in a private copy.

How it measures: `warmup` steps first (allocations, thread start-up), then `steps` training
steps on consecutive batches of x, each layer's forward and backward timed on its own (with a
device synchronize around each on cuda). The table shows medians over the steps. A layer fused
with the ReLU after it (Linear+ReLU, Conv2d+ReLU) is one row, as it is one kernel, and so is a
Conv2d that runs the max-pool after it (Conv2d+ReLU+MaxPool2d, cpu): its FLOPs are the
convolution's (the ReLU and the pool's comparisons are not counted). "step" is
the median of separate, uninstrumented steps (what Trainer.fit runs); "overhead" is that minus
the parts, i.e. Python between kernels and the shuffling gather that fit does are not in it.
"""

import math
import statistics
import sys
import time

import numpy as np

from . import _exclusive
from . import backends as _backends
from . import losses as _losses
from .validation import integer

__all__ = ["profile", "Profile"]

WIDTH = 100  # columns of the printed table


class Profile:
    """The result of `profile`: per-layer rows and totals, printable as a table.

    rows: one dict per executed layer: name, output_shape (per sample), forward_ms,
    backward_ms (None where the layer runs no backward pass), forward_gflops, backward_gflops
    (None for layers without arithmetic worth counting), share (of the instrumented step).
    """

    def __init__(
        self, rows, loss_ms, optimizer_ms, step_ms, batch_size, epoch_size, backend, steps
    ):
        self.rows = rows
        self.loss_ms = loss_ms
        self.optimizer_ms = optimizer_ms
        self.step_ms = step_ms
        self.batch_size = batch_size
        self.epoch_size = epoch_size
        self.backend = backend
        self.steps = steps

    @property
    def parts_ms(self):
        """Sum of the timed parts of one step (layers, loss, optimizer)."""
        layers = sum(r["forward_ms"] + (r["backward_ms"] or 0.0) for r in self.rows)
        return layers + self.loss_ms + self.optimizer_ms

    @property
    def overhead_ms(self):
        return self.step_ms - self.parts_ms

    @property
    def epoch_s(self):
        """An epoch of epoch_size samples at the measured step time."""
        return math.ceil(self.epoch_size / self.batch_size) * self.step_ms / 1e3

    def to_dict(self):
        return {
            "backend": self.backend,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "rows": self.rows,
            "loss_ms": self.loss_ms,
            "optimizer_ms": self.optimizer_ms,
            "parts_ms": self.parts_ms,
            "step_ms": self.step_ms,
            "overhead_ms": self.overhead_ms,
            "epoch_size": self.epoch_size,
            "epoch_s": self.epoch_s,
        }

    def __str__(self):
        """The table, at most WIDTH columns (long layer names are cut with '...')."""
        headers = ("layer", "output", "fwd ms", "GFLOP/s", "bwd ms", "GFLOP/s", "share")
        lines = []

        def num(v, spec):
            return "-" if v is None else format(v, spec)

        # the table drops the kernel_size keyword: Conv2d(1, 32, 5)+ReLU+MaxPool2d(2)
        body = [
            (
                r["name"].replace("kernel_size=", ""),
                "x".join(map(str, r["output_shape"])),
                num(r["forward_ms"], ".3f"),
                num(r["forward_gflops"], ".1f"),
                num(r["backward_ms"], ".3f"),
                num(r["backward_gflops"], ".1f"),
                f"{100 * r['share']:.1f}%",
            )
            for r in self.rows
        ]
        parts = self.parts_ms
        body.append(
            (
                "softmax cross-entropy",
                "",
                f"{self.loss_ms:.3f}",
                "-",
                "",
                "",
                f"{100 * self.loss_ms / parts:.1f}%",
            )
        )
        body.append(
            (
                "optimizer step",
                "",
                f"{self.optimizer_ms:.3f}",
                "-",
                "",
                "",
                f"{100 * self.optimizer_ms / parts:.1f}%",
            )
        )
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
        room = WIDTH - sum(widths[1:]) - 2 * (len(widths) - 1)
        if widths[0] > room:
            widths[0] = max(len(headers[0]), room)
            body = [
                (name if len(name) <= room else name[: room - 3] + "...", *rest)
                for name, *rest in body
            ]
        fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
        lines.append(
            f"fastnn profile: backend {self.backend}, batch {self.batch_size}, "
            f"median of {self.steps} steps"
        )
        lines.append(fmt.format(*headers))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(fmt.format(*row) for row in body)
        lines.append(
            f"parts {parts:.3f} ms; whole step {self.step_ms:.3f} ms "
            f"(overhead between kernels {1e3 * self.overhead_ms:+,.0f} us)"
        )
        lines.append(f"an epoch of {self.epoch_size:,} samples ~ {self.epoch_s:.2f} s")
        return "\n".join(lines)


def _backward_flops(step, forward_flops, backward_runs):
    """A conv/linear backward is a dW product plus, when the step needs it, a dX product,
    each as much work as the forward product."""
    if not backward_runs or not step.layer.param_names:
        return None
    return forward_flops * (2 if step.need_dx else 1)


def profile(
    model,
    x,
    y,
    *,
    backend=None,
    batch_size=128,
    steps=20,
    warmup=3,
    optimizer=None,
    loss="cross_entropy",
    epoch_size=None,
    file=sys.stdout,
    print_table=True,
):
    """Time one training step of `model` layer by layer; print the table and return a Profile.

    x, y: training data as for Trainer.fit (uint8 images or floats; integer labels). Only the
    first (warmup + steps) * batch_size samples are used, cycling when x is shorter.
    backend: move the model there first (default: where it is). optimizer: a fastnn optimizer
    to take the hyperparameters from (default SGD lr 0.05, momentum 0.9); a fresh copy
    steps, so its own state is untouched. The model's weights are restored before returning.
    epoch_size: samples per epoch for the estimate (default len(x)).
    """
    from .model import Sequential
    from .optim import SGD, Optimizer

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn Sequential, got {type(model).__name__}")
    batch_size = integer("batch_size", batch_size, 1)
    steps = integer("steps", steps, 1)
    warmup = integer("warmup", warmup, 0)
    if optimizer is None:
        optimizer = SGD(lr=0.05, momentum=0.9)
    elif not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastnn optimizer, got {type(optimizer).__name__}")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2 or len(x) < 1:
        raise ValueError(f"x must be a batch of samples (N, ...), got shape {x.shape}")
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape ({len(x)},) to match x, got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class labels, got {y.dtype}")
    loss_fn = _losses.get(loss)
    epoch_size = len(x) if epoch_size is None else int(epoch_size)

    # the profiled steps train the model (weights put back after): not while a thread trains it
    with _exclusive.training(model, optimizer):
        if backend is not None:
            model.to(_backends.get(backend))
        b = model.backend
        saved = model.state_dict()
        was_training = model.training
        optimizer = _private_copy(optimizer)
        was_reusing = model.plan.reuse
        try:
            model.train()
            model.set_reuse(True)  # as during fit: a step's arrays are kept and reused
            optimizer.attach(model)
            batches = _batches(model, b, x, y, batch_size, warmup + steps)
            rows, loss_ms, opt_ms = _instrumented(model, b, loss_fn, optimizer, batches, warmup)
            step_ms = _whole_steps(model, b, loss_fn, optimizer, batches[warmup:])
        finally:
            model.set_reuse(was_reusing)
            model.load_state_dict(saved)
            model.train(was_training)

    result = Profile(rows, loss_ms, opt_ms, step_ms, batch_size, epoch_size, b.name, steps)
    total = result.parts_ms
    for r in rows:
        r["share"] = (r["forward_ms"] + (r["backward_ms"] or 0.0)) / total
    if print_table:
        print(result, file=file)
    return result


def _private_copy(optimizer):
    """A fresh optimizer with the same hyperparameters and current learning rate."""
    fresh = type(optimizer)(**optimizer.config())
    fresh.lr = optimizer.lr
    return fresh


def _batches(model, b, x, y, batch_size, count):
    n = len(x)
    picks = [np.arange(i * batch_size, (i + 1) * batch_size) % n for i in range(count)]
    return [(model.prepare_input(x[idx]), b.xp.asarray(y[idx].astype(np.int64))) for idx in picks]


def _instrumented(model, b, loss_fn, optimizer, batches, warmup):
    run = list(model.plan.steps)  # the layers that execute, fused ones merged
    backward = set(map(id, model.plan.backward_steps))
    sync = b.synchronize
    clock = time.perf_counter
    fwd = [[] for _ in run]
    bwd = [[] for _ in run]
    loss_t, opt_t = [], []
    for index, (xb, yb) in enumerate(batches):
        keep = index >= warmup
        h = xb
        sync()
        for i, step in enumerate(run):
            t0 = clock()
            h = step.forward(h, True)
            sync()
            if keep:
                fwd[i].append(clock() - t0)
        t0 = clock()
        _, dh = loss_fn(b, h, yb)
        sync()
        if keep:
            loss_t.append(clock() - t0)
        for i in range(len(run) - 1, -1, -1):
            step = run[i]
            if id(step) not in backward:
                continue
            t0 = clock()
            dh = step.backward(dh)
            sync()
            if keep:
                bwd[i].append(clock() - t0)
        t0 = clock()
        optimizer.step()
        sync()
        if keep:
            opt_t.append(clock() - t0)

    shape = model._sample_shape(tuple(batches[0][0].shape[1:]))
    n = batches[0][0].shape[0]
    rows = []
    for i, step in enumerate(run):
        out_shape = step.output_shape(shape)
        flops = step.layer.flops(shape) * n if step.layer.param_names else None
        fwd_ms = statistics.median(fwd[i]) * 1e3
        bwd_ms = statistics.median(bwd[i]) * 1e3 if bwd[i] else None
        bwd_flops = _backward_flops(step, flops, bool(bwd[i])) if flops else None
        rows.append(
            {
                "name": step.name,
                "output_shape": tuple(out_shape),
                "forward_ms": fwd_ms,
                "backward_ms": bwd_ms,
                "forward_gflops": flops / fwd_ms / 1e6 if flops and fwd_ms > 0 else None,
                "backward_gflops": bwd_flops / bwd_ms / 1e6 if bwd_flops and bwd_ms else None,
            }
        )
        shape = out_shape
    return rows, statistics.median(loss_t) * 1e3, statistics.median(opt_t) * 1e3


def _whole_steps(model, b, loss_fn, optimizer, batches):
    """Median ms of plain training steps, as Trainer.fit runs them."""
    times = []
    for xb, yb in batches:
        b.synchronize()
        t0 = time.perf_counter()
        out = model.forward(xb, True)
        _, dout = loss_fn(b, out, yb)
        model.backward(dout)
        optimizer.step()
        b.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3
