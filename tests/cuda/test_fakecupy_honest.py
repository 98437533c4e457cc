"""The CuPy stand-in is only useful while it behaves as CuPy: its signatures match the real
ones (CuPy installed; no GPU needed for inspect), and it refuses what CuPy refuses."""

import inspect
import re

import numpy as np
import pytest

# module-level functions of CuPy the stand-in mimics
FUNCTIONS = (
    "array",
    "asarray",
    "ascontiguousarray",
    "asnumpy",
    "empty",
    "empty_like",
    "zeros",
    "zeros_like",
    "ones",
    "full",
    "arange",
    "matmul",
    "concatenate",
    "take",
    "copyto",
    "where",
)
# ndarray methods (Cython: their signature is the first line of the docstring)
METHODS = (
    "get",
    "reshape",
    "ravel",
    "transpose",
    "view",
    "copy",
    "astype",
    "fill",
    "sum",
    "mean",
    "max",
    "min",
    "all",
    "any",
    "argmax",
    "argmin",
    "item",
    "tolist",
)
UFUNCS = (
    "add",
    "subtract",
    "multiply",
    "true_divide",
    "maximum",
    "minimum",
    "exp",
    "log",
    "sqrt",
    "tanh",
    "isfinite",
    "greater",
    "equal",
)


def _parameters(signature):
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def _signature(obj):
    """inspect.signature, or the one Cython embeds in the docstring's first line."""
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        pass
    first = (obj.__doc__ or "").strip().splitlines()[0]
    match = re.match(r"[\w.]*?(\w+)\((.*)\)", first)
    if match is None:
        pytest.fail(f"no signature for {obj!r}: {first!r}")
    # Cython writes typed parameters ("str code=None"); drop the types
    args = re.sub(r"\b(?:str|tuple|bool|int|object|dtype)\s+(?=\w)", "", match.group(2))
    namespace = {}
    exec(f"def f({args}): pass", namespace)
    return inspect.signature(namespace["f"])


@pytest.fixture(scope="module")
def cupy():
    return pytest.importorskip("cupy", reason="CuPy is not installed (it is in the test extra)")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_have_cupys_signature(cupy, fakecupy_module, name):
    assert _parameters(inspect.signature(getattr(fakecupy_module, name))) == _parameters(
        _signature(getattr(cupy, name))
    ), name


@pytest.mark.parametrize("name", METHODS)
def test_ndarray_methods_have_cupys_signature(cupy, fakecupy_module, name):
    mine = _parameters(inspect.signature(getattr(fakecupy_module.ndarray, name)))
    theirs = _parameters(_signature(getattr(cupy.ndarray, name)))
    assert mine == theirs, name


@pytest.mark.parametrize("name", UFUNCS)
def test_ufuncs_take_as_many_arguments(cupy, fakecupy_module, name):
    real, fake = getattr(cupy, name), getattr(fakecupy_module, name)
    assert (fake.nin, fake.nout) == (real.nin, real.nout)


def test_random_stream_and_kernel_classes_match(cupy, fakecupy_module):
    assert _parameters(inspect.signature(fakecupy_module.random.default_rng)) == _parameters(
        inspect.signature(cupy.random.default_rng)
    )
    assert _parameters(inspect.signature(fakecupy_module.random.Generator.random)) == _parameters(
        inspect.signature(cupy.random.Generator.random)
    )
    raw = _parameters(_signature(cupy.RawModule))
    assert _parameters(inspect.signature(fakecupy_module.RawModule.__init__))[1:] == raw
    assert fakecupy_module.ndarray.__module__ == cupy.ndarray.__module__ == "cupy"
    assert fakecupy_module.ndarray.__name__ == cupy.ndarray.__name__


def test_implicit_host_conversion_is_refused_as_cupy_does(fake_cupy):
    a = fake_cupy.asarray(np.arange(6, dtype=np.float32))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(6, np.float32)
    with pytest.raises(TypeError):
        np.take(np.arange(6), fake_cupy.asarray(np.array([1, 2])))
    with pytest.raises(TypeError, match="incorrect type"):
        fake_cupy.ascontiguousarray(np.ones(3))
    total = a.sum()
    assert isinstance(total, fake_cupy.ndarray) and total.ndim == 0  # never a Python number
    assert not hasattr(a.flags, "aligned")  # CuPy's flags have no aligned/writeable


def test_counters_see_syncs_copies_and_launches(fake_cupy):
    stats = fake_cupy.stats
    stats.reset()
    a = fake_cupy.asarray(np.ones((2, 3), np.float32))  # one copy to the device
    b = fake_cupy.matmul(a, a.T) * 2  # two launches
    value = float(b.sum())  # a launch, a sync, a copy back
    assert value == 24 and stats.snapshot() == {
        "launches": 3,
        "syncs": 1,
        "to_device": 1,
        "to_host": 1,
    }
    assert stats.kernels["cublas.gemm"] == 1


def test_kernels_run_through_the_harness(fake_cuda, fake_cupy):
    x = fake_cuda.asarray(np.array([[-1.0, 2.0]], np.float32))
    y = fake_cuda.linear_forward(
        x,
        fake_cuda.asarray(np.eye(2, dtype=np.float32)),
        fake_cuda.asarray(np.zeros(2, np.float32)),
        relu=True,
        check_finite=False,
    )
    assert isinstance(y, fake_cupy.ndarray) and y.get().tolist() == [[0.0, 2.0]]
    assert fake_cupy.stats.kernels["bias_act"] == 1
    with pytest.raises(ValueError, match="only fastnn's kernel sources"):
        fake_cupy.RawModule(code='extern "C" __global__ void k() {}')
