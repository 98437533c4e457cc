"""Inference of an MLP in one compiled call: the plan behind Sequential.predict on cpu.

A model whose running layers are Flatten and Linear (ReLU fused) only, on a backend with the
compiled chain kernel, predicts through `DensePlan`: the weights' addresses and output buffers
are fixed once, so a call is one kernel entry (every layer's GEMM, bias, ReLU and the argmax)
instead of a Python pass per layer. On a few samples that overhead is most of the time.

Threads: the plan itself is immutable once built (the layers, their parameter arrays, the
dtype). The output buffers, and the address table that points the kernel at them, are per
thread (`threading.local`): several threads predicting with one model at once each write
their own buffers, and a thread's later calls reuse its buffers, so a batch-1 call still
allocates nothing but its result. A thread's buffers go when the thread ends or the plan is
replaced (new parameters, another dtype).
"""

import math
import threading
import weakref

import numpy as np

# Rows the kept output buffers hold at most; larger inputs are run in slices of this many.
MAX_ROWS = 1024


class _Plan:
    """What DensePlan and ConvPlan share: the layers and parameter arrays they were built on."""

    layers: list
    params: list
    dtype: object

    def current(self, model):
        """Whether this plan still describes `model` (same layers, same parameter arrays)."""
        if self.dtype != model.dtype:
            return False
        for layer, params in zip(self.layers, self.params):
            if layer.params[0] is not params[0] or layer.params[1] is not params[1]:
                return False
        return True

    def predict(self, x):
        """Class indices (a new int64 array) for x, a C-contiguous (N, features) array of the
        model's dtype; NaN or infinity in x raises ValueError."""
        return self._in_slices(x, True)

    def outputs(self, x):
        """The last layer's outputs (a new array) for x, as predict takes it."""
        return self._in_slices(x, False)

    def _in_slices(self, x, labels):
        n = x.shape[0]
        if n > MAX_ROWS:
            parts = [self._in_slices(x[i : i + MAX_ROWS], labels) for i in range(0, n, MAX_ROWS)]
            return np.concatenate(parts)
        workspace = self._run(x, labels)
        return workspace.labels[:n].copy() if labels else workspace.buffers[-1][:n].copy()

    def _run(self, x, labels):
        """Run the plan on x's n <= MAX_ROWS rows into this thread's workspace (its labels too
        when `labels`); returns the workspace."""
        raise NotImplementedError


def _dense_table(shapes, params, buffers):
    """The dense chain kernel's table: weights, bias, output, in and out features, ReLU per
    Linear layer."""
    return np.array(
        [
            [w.ctypes.data, b.ctypes.data, y.ctypes.data, fin, fout, relu]
            for (fin, fout, relu), (w, b), y in zip(shapes, params, buffers)
        ],
        dtype=np.int64,
    )


class DensePlan(_Plan):
    """The chain of `model`'s Linear layers, with buffers for up to MAX_ROWS rows."""

    def __init__(self, model, chain):
        self._chain_forward = model.backend.dense_chain_forward
        self.layers = [layer for layer, _ in chain]
        self.params = [tuple(layer.params) for layer in self.layers]
        # (in_features, out_features, relu) per layer, fixed here so a workspace made later
        # describes the same chain as the parameters above
        self.shapes = [(layer.in_features, layer.out_features, int(relu)) for layer, relu in chain]
        self.dtype = model.dtype
        self._per_thread = threading.local()  # .workspace: this thread's _Workspace

    @classmethod
    def build(cls, model):
        """A plan for `model`, or None when it is not a plain chain of Linear layers on a
        backend with the chain kernel (a CNN of Conv2d layers, then Flatten and Linear layers,
        gets a ConvPlan)."""
        if not model.backend.runs_dense_chain:
            return None
        chain = model.plan.linear_chain()  # None unless leading Flattens and Linear layers
        return ConvPlan.build(model) if chain is None else cls(model, chain)

    def _workspace(self, rows):
        """This thread's buffers, with room for at least `rows` rows."""
        workspace = getattr(self._per_thread, "workspace", None)
        if workspace is None or workspace.rows < rows:
            workspace = self._per_thread.workspace = _Workspace(self, rows)
        return workspace

    def _run(self, x, labels):
        n = x.shape[0]
        workspace = self._workspace(n)
        self._chain_forward(x, workspace.table, workspace.labels[:n] if labels else None)
        return workspace


class _Workspace:
    """One thread's output buffers for a plan, and the kernel's table of addresses into them
    (weights, bias, output, in and out features, ReLU per layer)."""

    __slots__ = ("buffers", "labels", "rows", "table")

    def __init__(self, plan, rows):
        self.rows = rows
        self.buffers = [np.empty((rows, fout), plan.dtype) for _, fout, _ in plan.shapes]
        self.table = _dense_table(plan.shapes, plan.params, self.buffers)
        self.labels = np.empty(rows, np.int64)


class ConvPlan(_Plan):
    """A CNN's inference in two compiled calls: the Conv2d layers (their ReLU and max-pool
    included) through the conv kernels' chain (fastnn._kernels.conv.chain_forward), then the
    Linear layers and the argmax through the DensePlan kernel. Each convolution runs the
    algorithm a checked call picks for the batch's shape, so the bits are the layer-by-layer
    forward pass's. float32 models on cpu; buffers per thread, as DensePlan's."""

    def __init__(self, model, convs, linears, conv_kernels, dense_kernels, get_num_threads):
        self._conv = conv_kernels
        self._chain_forward = dense_kernels.chain_forward
        self._get_num_threads = get_num_threads
        self._model = weakref.ref(model)  # for the per-sample input shape it validated
        self.layers = [layer for layer, _, _ in convs] + [layer for layer, _ in linears]
        self.n_convs = len(convs)
        self.params = [tuple(layer.params) for layer in self.layers]
        self.conv_config = [
            (
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                int(relu),
                pool,
            )
            for layer, relu, pool in convs
        ]
        self.shapes = [
            (layer.in_features, layer.out_features, int(relu)) for layer, relu in linears
        ]
        self.dtype = model.dtype
        self._per_thread = threading.local()  # .workspace: this thread's _ConvWorkspace

    @classmethod
    def build(cls, model):
        """A plan for a float32 `model` whose evaluation steps are Conv2d steps (their ReLU
        and max-pool fused in, no batch norm folded), a Flatten, then Linear steps; or None."""
        from . import plan as P

        if model.dtype != np.float32:
            return None
        try:
            from ._kernels import conv as conv_kernels
            from ._kernels import dense as dense_kernels
            from ._kernels import runtime
        except ImportError:  # pragma: no cover - the cpu backend has the kernels
            return None
        steps = model.plan.eval_steps
        convs, linears, k = [], [], 0
        while (
            k < len(steps)
            and type(steps[k]) in (P.ConvStep, P.ConvPoolStep)
            and steps[k].fold is None
        ):
            step = steps[k]
            pool = step.pool.kernel_size if type(step) is P.ConvPoolStep else 0
            convs.append((step.layer, step.relu, pool))
            k += 1
        if not convs or k >= len(steps) or type(steps[k]) is not P.FlattenStep:
            return None
        for step in steps[k + 1 :]:
            if type(step) is not P.LinearStep or step.fold is not None:
                return None
            linears.append((step.layer, step.relu))
        if not linears or any(len(layer.params) != 2 for layer, *_ in convs + linears):
            return None
        return cls(model, convs, linears, conv_kernels, dense_kernels, runtime.threads_now)

    def _workspace(self, rows, sample_shape):
        workspace = getattr(self._per_thread, "workspace", None)
        if workspace is None or workspace.rows < rows or workspace.sample_shape != sample_shape:
            workspace = self._per_thread.workspace = _ConvWorkspace(self, rows, sample_shape)
        return workspace

    def _run(self, x, labels):
        model = self._model()
        sample_shape = None if model is None else model._input_ok[1]
        if sample_shape is None or len(sample_shape) != 3 or math.prod(sample_shape) != x.shape[1]:
            raise ValueError(f"x must have samples of {sample_shape}, got {x.shape[1]} values")
        n = x.shape[0]
        workspace = self._workspace(n, tuple(sample_shape))
        nthreads = self._get_num_threads()  # one look at the machine's load for both calls
        self._conv.chain_forward(x, workspace.conv_table(n, nthreads), True, nthreads)
        self._chain_forward(  # the conv chain checked x
            workspace.flat[:n],
            workspace.table,
            workspace.labels[:n] if labels else None,
            False,
            nthreads,
        )
        return workspace


class _ConvWorkspace:
    """One thread's buffers for a ConvPlan: each convolution's output, one argmax buffer the
    fused kernels write (never read), the convolution's output before an unfused max-pool,
    the kernels' scratch memory, the Linear layers' outputs; and the convolutions' table per
    batch size (the algorithm, and so the scratch size, depends on it)."""

    def __init__(self, plan, rows, sample_shape):
        self.plan, self.rows, self.sample_shape = plan, rows, sample_shape
        self.stages = []  # (layer input shape, conv output shape, pooled output shape)
        shape = sample_shape
        for layer, config in zip(plan.layers, plan.conv_config):
            pool = config[-1]
            co, ho, wo = layer.output_shape(shape)
            out = (co, ho // pool, wo // pool) if pool else (co, ho, wo)
            self.stages.append((shape, (co, ho, wo), out))
            shape = out
        self.outputs = [np.empty((rows, *out), np.float32) for _, _, out in self.stages]
        # scratch, grown to what the tables made so far need: the kernels' workspace, the
        # argmax the fused max-pools write (never read), a convolution's output before a
        # max-pool that does not fuse
        self.scratch = {
            "work": np.empty(1, np.float32),
            "argmax": np.empty(1, np.int32),
            "conv_out": np.empty(1, np.float32),
        }
        self.flat = self.outputs[-1].reshape(rows, -1)
        self.buffers = [np.empty((rows, fout), np.float32) for _, fout, _ in plan.shapes]
        self.table = _dense_table(plan.shapes, plan.params[plan.n_convs :], self.buffers)
        self.labels = np.empty(rows, np.int64)
        self._tables = {}  # (rows, threads) -> the convolutions' table
        # per stage run by Winograd: its transformed weights, the weights they were made
        # from, and the kernel's state word (0: not made yet); kept between calls
        self._kept = {}

    def conv_table(self, n, nthreads):
        key = (n, nthreads)
        table = self._tables.get(key)
        if table is not None:
            return table
        conv, plan = self.plan._conv, self.plan
        rows = []
        need = {"work": 1, "argmax": 1, "conv_out": 1}
        for (shape, (co, ho, wo), _), config, (w, b), y in zip(
            self.stages, plan.conv_config, plan.params, self.outputs
        ):
            ci, _, (kh, kw), stride, padding, relu, pool = config
            x_shape = (n, *shape)
            algorithm = conv.choose(x_shape, w.shape, np.float32, stride, padding)
            fused = bool(pool) and bool(
                conv.fusable(x_shape, w.shape, np.float32, stride, padding, pool, need_dx=False)
            )
            need["work"] = max(
                need["work"],
                conv.workspace_size(
                    "forward",
                    x_shape,
                    w.shape,
                    np.float32,
                    stride,
                    padding,
                    algorithm,
                    nthreads,
                    need_dx=False,
                    pool=pool if fused else 0,
                ),
            )
            if fused:
                need["argmax"] = max(need["argmax"], n * co * (ho // pool) * (wo // pool))
            elif pool:
                need["conv_out"] = max(need["conv_out"], n * co * ho * wo)
            kept = (0, 0, 0)
            if algorithm == "winograd":
                arrays = self._kept.get(len(rows))
                if arrays is None:
                    arrays = self._kept[len(rows)] = (
                        np.empty(conv.kept_weights_size(x_shape, w.shape), np.float32),
                        np.empty(w.size, np.float32),
                        np.zeros(1, np.int64),
                    )
                kept = tuple(a.ctypes.data for a in arrays)
            rows.append(
                [
                    conv.algorithm_code(algorithm),
                    pool,
                    int(fused),
                    relu,
                    ci,
                    shape[1],
                    shape[2],
                    co,
                    kh,
                    kw,
                    stride,
                    padding,
                    ho,
                    wo,
                    w.ctypes.data,
                    b.ctypes.data,
                    y.ctypes.data,
                    0,
                    0,
                    0,
                    *kept,
                ]
            )
        for name, size in need.items():
            if self.scratch[name].size < size:  # new addresses: the tables made so far go
                self.scratch[name] = np.empty(size, self.scratch[name].dtype)
                self._tables = {}
        for row in rows:
            row[17:20] = [self.scratch[name].ctypes.data for name in ("argmax", "conv_out", "work")]
        if len(self._tables) >= 8:
            self._tables = {}
        table = self._tables[key] = np.array(rows, dtype=np.int64)
        return table
