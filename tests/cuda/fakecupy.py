"""A CuPy stand-in for machines without a GPU: enough of CuPy for fastnn's cuda backend, honest
about the things that hide host/device bugs.

- `ndarray` wraps a NumPy array but is not one. `__array__` raises TypeError as CuPy's does,
  so `np.asarray(device_array)` fails here exactly where it would fail on a GPU; mixing a NumPy
  array into an operation on device arrays is refused too. Reductions return 0-d arrays.
- `RawModule(code=...).get_function(name)` runs fastnn's .cu kernels on the CPU through the
  host harness (tests/cuda/harness), given to `install()`.
- `stats` counts kernel launches (fastnn's kernels by name, and every CuPy operation that would
  launch one: elementwise, reductions, cuBLAS calls, copies inside the device), synchronizations
  (anything that waits for the GPU: float(), .get(), stream syncs) and host<->device copies.

Signatures of the CuPy functions mimicked here match the real ones (tests/cuda/
test_fakecupy_honest.py compares them where CuPy is installed; no GPU is needed for that).
"""

import collections
import types

import numpy as np

__version__ = "14.2.0"

float16, float32, float64 = np.float16, np.float32, np.float64
int8, int16, int32, int64 = np.int8, np.int16, np.int32, np.int64
uint8, uint32, uint64 = np.uint8, np.uint32, np.uint64
bool_ = np.bool_
dtype = np.dtype
newaxis = None

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
    "construct a NumPy array explicitly."
)


class Stats:
    """What a GPU would have been asked to do since the last reset()."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.launches = 0
        self.syncs = 0
        self.to_device = 0  # host -> device copies
        self.to_host = 0  # device -> host copies
        self.kernels = collections.Counter()  # launches by name (fastnn kernels, CuPy ops)
        self.allocations = []  # shapes of the arrays allocated, in order

    def launch(self, name):
        self.launches += 1
        self.kernels[name] += 1

    def snapshot(self):
        return {
            "launches": self.launches,
            "syncs": self.syncs,
            "to_device": self.to_device,
            "to_host": self.to_host,
        }


stats = Stats()
_runner = None  # the host harness library (get_function(name) -> f(grid, block, args))
_sources = {}  # kernel source text -> family, the only code RawModule accepts


def install(runner, sources):
    """Run kernels through `runner` (a host_harness.HostLibrary); `sources` maps each family
    name to its .cu text (fastnn.backends.cuda.sources.source)."""
    global _runner
    _runner = runner
    _sources.clear()
    _sources.update({text: family for family, text in sources.items()})
    stats.reset()


# ---- the array type ---------------------------------------------------------------------------


class _Flags:
    """CuPy's flags: no `aligned`, no `writeable` (device memory is always both)."""

    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.base is None


class Device:
    """The one device of this stand-in, id 0."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")

    def use(self):
        return self

    def synchronize(self):
        stats.syncs += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class _MemoryPointer:
    """a.data: `ptr` is the address the kernels get (a host address here)."""

    def __init__(self, a):
        self.ptr = a.ctypes.data


def _check_operand(value):
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)}")
    return value._a if isinstance(value, ndarray) else value


def _wrap(a):
    out = ndarray.__new__(ndarray)
    out._a = np.asarray(a)
    return out


class ndarray:
    """A device array: a NumPy array inside, refused wherever CuPy refuses host conversion."""

    __module__ = "cupy"
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = np.empty(shape, dtype=dtype, order=order)

    # -- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    device = property(lambda self: Device(0))
    T = property(lambda self: _wrap(self._a.T))
    data = property(lambda self: _MemoryPointer(self._a))

    # -- refused implicit conversion; explicit copies count
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None, blocking=True):
        stats.syncs += 1
        stats.to_host += 1
        copy = np.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = copy
            return out
        return copy

    def item(self):
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __bool__(self):
        return bool(self.get())

    def __format__(self, spec):
        return format(self.get() if self.ndim else self.get().item(), spec)

    def __repr__(self):
        return f"array({self.get()!r})"

    __str__ = __repr__

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(self._a[i]) for i in range(len(self._a)))

    # -- views and copies
    def reshape(self, *shape, order="C", copy=None):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        out = self._a.reshape(shape, order=order)
        if not np.shares_memory(out, self._a) and out.size:
            stats.launch("cupy.copy")
        return _wrap(out)

    def ravel(self, order="C"):
        return self.reshape(-1, order=order)

    def transpose(self, *axes):
        return _wrap(self._a.transpose(*axes))

    def view(self, dtype=None, type=None):
        return _wrap(self._a.view(dtype) if dtype is not None else self._a.view())

    def copy(self, order="C"):
        stats.launch("cupy.copy")
        return _wrap(self._a.copy(order=order))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        stats.launch("cupy.astype")
        return _wrap(self._a.astype(dtype, order=order))

    def fill(self, value):
        stats.launch("cupy.fill")
        self._a.fill(value)

    # -- indexing
    def _index(self, key):
        keys = key if isinstance(key, tuple) else (key,)
        fancy = False
        converted = []
        for k in keys:
            if isinstance(k, ndarray):
                fancy = True
                converted.append(k._a)
            elif isinstance(k, (np.ndarray, list)):
                stats.to_device += 1  # CuPy copies a host index array over
                fancy = True
                converted.append(np.asarray(k))
            else:
                converted.append(k)
        return (tuple(converted) if isinstance(key, tuple) else converted[0]), fancy

    def __getitem__(self, key):
        key, fancy = self._index(key)
        if fancy:
            stats.launch("cupy.take")
        return _wrap(self._a[key])

    def __setitem__(self, key, value):
        key, _ = self._index(key)
        if isinstance(value, np.ndarray):
            stats.to_device += 1
        else:
            value = _check_operand(value)
            stats.launch("cupy.scatter")
        self._a[key] = value

    # -- reductions: 0-d arrays, never Python numbers
    def _reduce(self, name, axis=None, dtype=None, out=None, keepdims=False):
        stats.launch(f"cupy.{name}")
        kwargs = {"axis": axis, "keepdims": keepdims}
        if dtype is not None:
            kwargs["dtype"] = dtype
        result = np.asarray(getattr(self._a, name)(**kwargs))
        if out is not None:
            out._a[...] = result
            return out
        return _wrap(result)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._reduce("sum", axis, dtype, out, keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._reduce("mean", axis, dtype, out, keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return self._reduce("max", axis, None, out, keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return self._reduce("min", axis, None, out, keepdims)

    def all(self, axis=None, out=None, keepdims=False):
        return self._reduce("all", axis, None, out, keepdims)

    def any(self, axis=None, out=None, keepdims=False):
        return self._reduce("any", axis, None, out, keepdims)

    def argmax(self, axis=None, out=None, dtype=None, keepdims=False):
        stats.launch("cupy.argmax")
        return _wrap(np.asarray(self._a.argmax(axis=axis, keepdims=keepdims)))

    def argmin(self, axis=None, out=None, dtype=None, keepdims=False):
        stats.launch("cupy.argmin")
        return _wrap(np.asarray(self._a.argmin(axis=axis, keepdims=keepdims)))

    # -- arithmetic through the ufuncs below
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        mine = _UFUNCS.get(ufunc.__name__)
        if method != "__call__" or mine is None or any(isinstance(v, np.ndarray) for v in inputs):
            return NotImplemented
        return mine(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        mine = globals().get(func.__name__)
        if not callable(mine):
            return NotImplemented
        return mine(*args, **kwargs)


def _binary(name, reflected=False, inplace=False):
    def method(self, other):
        if isinstance(other, np.ndarray):
            raise TypeError(f"Unsupported type {type(other)}")
        if not isinstance(other, (ndarray, int, float, bool, complex, np.generic)):
            return NotImplemented
        ufunc = _UFUNCS[name]
        if inplace:
            return ufunc(self, other, out=self)
        return ufunc(other, self) if reflected else ufunc(self, other)

    return method


for _op, _name in (
    ("add", "add"),
    ("sub", "subtract"),
    ("mul", "multiply"),
    ("truediv", "true_divide"),
    ("floordiv", "floor_divide"),
    ("pow", "power"),
    ("mod", "remainder"),
    ("and", "bitwise_and"),
    ("or", "bitwise_or"),
):
    setattr(ndarray, f"__{_op}__", _binary(_name))
    setattr(ndarray, f"__r{_op}__", _binary(_name, reflected=True))
    setattr(ndarray, f"__i{_op}__", _binary(_name, inplace=True))
for _op, _name in (
    ("lt", "less"),
    ("le", "less_equal"),
    ("gt", "greater"),
    ("ge", "greater_equal"),
    ("eq", "equal"),
    ("ne", "not_equal"),
):
    setattr(ndarray, f"__{_op}__", _binary(_name))
ndarray.__hash__ = None
ndarray.__neg__ = lambda self: _UFUNCS["negative"](self)
ndarray.__abs__ = lambda self: _UFUNCS["absolute"](self)
ndarray.__matmul__ = lambda self, other: matmul(self, other)


class ufunc:
    """An elementwise kernel: one launch; NumPy arrays are refused as operands."""

    def __init__(self, name, nin, nout):
        self.__name__ = name
        self.name = f"cupy_{name}"
        self.nin, self.nout, self.nargs = nin, nout, nin + nout
        self._numpy = getattr(np, name)

    def __call__(self, *args, out=None, dtype=None, casting="same_kind"):
        if len(args) != self.nin:
            raise TypeError(f"Wrong number of arguments for {self.name}")
        values = [_check_operand(a) for a in args]
        stats.launch(f"cupy.{self.__name__}")
        kwargs = {"casting": casting}
        if dtype is not None:
            kwargs["dtype"] = dtype
        if out is not None:
            if not isinstance(out, ndarray):
                raise TypeError(f"Output argument must be cupy.ndarray, got {type(out)}")
            self._numpy(*values, out=out._a, **kwargs)
            return out
        return _wrap(self._numpy(*values, **kwargs))

    def __repr__(self):
        return f"<ufunc '{self.name}'>"


_UFUNCS = {
    name: ufunc(name, nin, 1)
    for name, nin in (
        ("add", 2),
        ("subtract", 2),
        ("multiply", 2),
        ("true_divide", 2),
        ("divide", 2),
        ("floor_divide", 2),
        ("power", 2),
        ("remainder", 2),
        ("maximum", 2),
        ("minimum", 2),
        ("less", 2),
        ("less_equal", 2),
        ("greater", 2),
        ("greater_equal", 2),
        ("equal", 2),
        ("not_equal", 2),
        ("bitwise_and", 2),
        ("bitwise_or", 2),
        ("logical_and", 2),
        ("exp", 1),
        ("log", 1),
        ("sqrt", 1),
        ("tanh", 1),
        ("negative", 1),
        ("absolute", 1),
        ("isfinite", 1),
        ("isnan", 1),
    )
}
globals().update(_UFUNCS)


# ---- creation and copies ----------------------------------------------------------------------


def _from_host(a, dtype=None, order=None):
    stats.to_device += 1
    return _wrap(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        stats.launch("cupy.copy")
        return _wrap(np.array(obj._a, dtype=dtype, copy=True, order=order, ndmin=ndmin))
    return _from_host(np.array(obj, ndmin=ndmin), dtype, order)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    if isinstance(a, ndarray):
        if (dtype is None or np.dtype(dtype) == a.dtype) and not copy:
            return a
        return a.astype(a.dtype if dtype is None else dtype)
    return _from_host(a, dtype, order)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):  # CuPy's takes device arrays only
        raise TypeError(
            f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
            f"got {type(a).__name__})"
        )
    if a._a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    stats.launch("cupy.copy")
    return _wrap(np.ascontiguousarray(a._a, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return np.asarray(a, order=order)


def empty(shape, dtype=float, order="C"):
    stats.allocations.append(tuple(np.atleast_1d(shape)) if np.ndim(shape) else (shape,))
    return _wrap(np.empty(shape, dtype=dtype, order=order))


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    return _wrap(np.empty_like(prototype._a, dtype=dtype, order=order, shape=shape))


def zeros(shape, dtype=float, order="C"):
    stats.launch("cupy.memset")
    return _wrap(np.zeros(shape, dtype=dtype, order=order))


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    stats.launch("cupy.memset")
    return _wrap(np.zeros_like(a._a, dtype=dtype, order=order, shape=shape))


def ones(shape, dtype=float, order="C"):
    stats.launch("cupy.fill")
    return _wrap(np.ones(shape, dtype=dtype, order=order))


def full(shape, fill_value, dtype=None, order="C"):
    stats.launch("cupy.fill")
    return _wrap(np.full(shape, _check_operand(fill_value), dtype=dtype, order=order))


def arange(start, stop=None, step=1, dtype=None):
    stats.launch("cupy.arange")
    return _wrap(
        np.arange(start, stop, step, dtype=dtype)
        if stop is not None
        else np.arange(start, step=step, dtype=dtype)
    )


def _device_only(name, *arrays):
    for a in arrays:
        if not isinstance(a, ndarray):
            raise TypeError(f"{name}: Unsupported type {type(a)}")


def matmul(
    *args,
    axes=None,
    axis=None,
    keepdims=False,
    casting="same_kind",
    dtype=None,
    signature=None,
    order="K",
    out=None,
):
    a, b = args
    _device_only("matmul", a, b)
    stats.launch("cublas.gemm")
    result = np.matmul(a._a, b._a)
    if out is not None:
        out._a[...] = result
        return out
    return _wrap(result)


def concatenate(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _device_only("concatenate", *tup)
    stats.launch("cupy.concatenate")
    return _wrap(np.concatenate([a._a for a in tup], axis=axis, dtype=dtype))


def take(a, indices, axis=None, out=None):
    _device_only("take", a)
    if isinstance(indices, ndarray):
        indices = indices._a
    else:
        stats.to_device += 1
    stats.launch("cupy.take")
    if out is not None:
        np.take(a._a, indices, axis=axis, out=out._a)
        return out
    return _wrap(np.take(a._a, indices, axis=axis))


def copyto(dst, src, casting="same_kind", where=None):
    _device_only("copyto", dst)
    if isinstance(src, np.ndarray):
        raise TypeError(f"Unsupported type {type(src)}")
    stats.launch("cupy.copy")
    np.copyto(
        dst._a,
        _check_operand(src),
        casting=casting,
        where=True if where is None else _check_operand(where),
    )


def where(condition, x=None, y=None):
    stats.launch("cupy.where")
    return _wrap(np.where(*(_check_operand(v) for v in (condition, x, y) if v is not None)))


# ---- random, CUDA runtime, kernels ------------------------------------------------------------


class Generator:
    """cupy.random.Generator: draws on the device (one launch), from a NumPy generator here."""

    def __init__(self, bit_generator):
        self._rng = np.random.default_rng(bit_generator)

    def random(self, size=None, dtype=np.float64, out=None):
        stats.launch("curand.random")
        values = self._rng.random(size, dtype=dtype)
        if out is not None:
            out._a[...] = values
            return out
        return _wrap(values)


def _default_rng(seed=None):
    return Generator(seed)


random = types.ModuleType("cupy.random")
random.default_rng = _default_rng
random.Generator = Generator
_default_rng.__name__ = "default_rng"


class Stream:
    def synchronize(self):
        stats.syncs += 1


_stream = Stream()


def _get_current_stream(device_id=-1):
    return _stream


cuda = types.ModuleType("cupy.cuda")
cuda.Device = Device
cuda.Stream = Stream
cuda.get_current_stream = _get_current_stream
cuda.runtime = types.ModuleType("cupy.cuda.runtime")
cuda.runtime.getDeviceCount = lambda: 1
cuda.runtime.driverGetVersion = lambda: 13000
cuda.runtime.runtimeGetVersion = lambda: 13000
cuda.nvrtc = types.ModuleType("cupy.cuda.nvrtc")
cuda.nvrtc.getVersion = lambda: (13, 0)


class RawKernel:
    """One kernel of a RawModule, run by the host harness; its arguments must be device arrays
    or NumPy scalars, as a real launch needs."""

    def __init__(self, module, name):
        self.module = module
        self.name = name
        self._function = _runner.get_function(name)

    def __call__(self, grid, block, args, *, shared_mem=0):
        host_args = []
        for a in args:
            if isinstance(a, np.ndarray):
                raise TypeError(f"Unsupported type {type(a)} (a NumPy array passed to a kernel)")
            host_args.append(a._a if isinstance(a, ndarray) else a)
        stats.launch(self.name)
        self._function(grid, block, tuple(host_args), shared_mem=shared_mem)


class RawModule:
    """Accepts only fastnn's kernel sources (the harness has them compiled)."""

    def __init__(
        self,
        code=None,
        *,
        path=None,
        options=(),
        backend="nvrtc",
        translate_cucomplex=False,
        enable_cooperative_groups=False,
        name_expressions=None,
        jitify=None,
    ):
        if _runner is None:
            raise RuntimeError("fakecupy.install(runner, sources) was not called")
        if code not in _sources:
            raise ValueError("fakecupy runs only fastnn's kernel sources through the harness")
        self.code = code
        self.family = _sources[code]

    def get_function(self, name):
        return RawKernel(self, name)
