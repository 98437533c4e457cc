"""The launch wrapper: signatures parsed from the .cu sources, and every argument checked
against them before a (fake) kernel is called. No CuPy or GPU needed."""

import numpy as np
import pytest

from fastnn.backends.cuda import kernels, launch, sources
from fastnn.backends.cuda.launch import ArraySpace, Kernel, Param, Signature


class FakeKernel:
    """Stands in for a cupy.RawKernel: records what it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, grid, block, args, shared_mem=0):
        self.calls.append((grid, block, args))


SOURCE = """
#define THREADS 128
// extern "C" __global__ void commented_out(double x)
extern "C" __global__ void __launch_bounds__(THREADS)
scale(float* __restrict__ y, const float* __restrict__ x, const int* idx,
      const long long* labels, int n, float alpha) {}
"""


@pytest.fixture
def scale():
    sig = launch.parse_signatures(SOURCE)["scale"]
    fake = FakeKernel()
    return Kernel(sig, fake, launch.HOST), fake


def arrays():
    return (
        np.zeros(4, np.float32),
        np.ones(4, np.float32),
        np.zeros(4, np.int32),
        np.zeros(4, np.int64),
    )


def test_parse_reads_types_constness_and_launch_bound():
    sig = launch.parse_signatures(SOURCE)["scale"]
    assert [p.ctype for p in sig.params] == [
        "float*",
        "const float*",
        "const int*",
        "const long long*",
        "int",
        "float",
    ]
    assert [p.name for p in sig.params] == ["y", "x", "idx", "labels", "n", "alpha"]
    assert sig.max_threads == 128
    assert set(launch.parse_signatures(SOURCE)) == {"scale"}  # the commented one is not a kernel


@pytest.mark.parametrize("bad", ["double x", "float** x", "unsigned n", "float"])
def test_parse_refuses_types_it_cannot_check(bad):
    with pytest.raises(ValueError, match="cannot parse parameter"):
        launch.parse_signatures(f'extern "C" __global__ void k(int n, {bad}) {{}}')


def test_every_shipped_kernel_parses():
    found = kernels.signatures()
    assert set(found) == {
        "bias_act",
        "relu_inplace",
        "bias_grad",
        "bias_grad_rows",
        "im2col",
        "col2im",
        "maxpool_forward",
        "maxpool_backward",
        "softmax_xent",
        "softmax_xent_rows",
        "step_metrics",
        "sgd_update",
        "adam_update",
        "sgd_update_many",
        "adam_update_many",
        "gather_batch",
        "batchnorm_stats",
        "batchnorm_scale_shift",
        "batchnorm_backward_sums",
        "batchnorm_backward_dx",
        "avgpool_forward",
        "avgpool_backward",
        "global_avgpool_forward",
        "global_avgpool_backward",
        "leaky_relu_forward",
        "leaky_relu_backward",
    }
    assert {family for family, _ in found.values()} == set(sources.FAMILIES)
    assert found["softmax_xent"][1].max_threads == 256  # FASTNN_REDUCE_THREADS, from common.cuh


def test_sources_paste_the_header_in():
    text = sources.source("loss")
    assert '#include "common.cuh"' not in text
    assert "fastnn_block_sum" in text and "softmax_xent" in text


def test_python_ints_become_int32_and_floats_float32(scale):
    kernel, fake = scale
    kernel(3, 128, *arrays(), 4, 2)
    grid, block, args = fake.calls[0]
    assert grid == (3, 1, 1) and block == (128, 1, 1)
    assert type(args[4]) is np.int32 and args[4] == 4
    assert type(args[5]) is np.float32 and args[5] == 2.0
    kernel((2, 2), (8, 4), *arrays(), np.int64(7), np.float64(0.5))
    _, _, args = fake.calls[1]
    assert type(args[4]) is np.int32 and type(args[5]) is np.float32


@pytest.mark.parametrize(
    "position, value, error, message",
    [
        (0, np.zeros(4, np.float64), TypeError, "'y' must be float32"),
        (1, np.zeros(4, np.int32), TypeError, "'x' must be float32"),
        (2, np.zeros(4, np.int64), TypeError, "'idx' must be int32"),
        (3, np.zeros(4, np.int32), TypeError, "'labels' must be int64"),
        (0, [0.0] * 4, TypeError, "'y' must be a numpy.ndarray"),
        (1, np.zeros((4, 2), np.float32)[:, 0], ValueError, "'x' must be C-contiguous"),
        (4, 2**31, ValueError, "'n' = 2147483648 does not fit in int"),
        (4, -(2**31) - 1, ValueError, "does not fit in int"),
        (4, 2.0, TypeError, "'n' must be an integer"),
        (5, "1", TypeError, "'alpha' must be a real number"),
        (5, True, TypeError, "'alpha' must be a real number"),
    ],
)
def test_bad_arguments_are_refused_before_the_launch(scale, position, value, error, message):
    kernel, fake = scale
    args = list(arrays()) + [4, 1.0]
    args[position] = value
    with pytest.raises(error, match=message):
        kernel(1, 32, *args)
    assert fake.calls == []


def test_argument_count(scale):
    kernel, fake = scale
    with pytest.raises(TypeError, match="takes 6 arguments"):
        kernel(1, 32, *arrays(), 4)
    assert fake.calls == []


@pytest.mark.parametrize(
    "grid, block, message",
    [
        (1, 129, "exceeds its launch bound of 128"),
        (1, (16, 16), "exceeds its launch bound"),
        (0, 32, "grid sizes must be in"),
        (1, 0, "block sizes must be in"),
        ((1, 70000), 32, "grid sizes must be in"),
        ((1, 1, 1, 1), 32, "tuple of 1 to 3 ints"),
        (1.0, 32, "must be an int"),
    ],
)
def test_bad_launch_shapes(scale, grid, block, message):
    kernel, fake = scale
    with pytest.raises((TypeError, ValueError), match=message):
        kernel(grid, block, *arrays(), 4, 1.0)
    assert fake.calls == []


class DeviceArray(np.ndarray):
    """A NumPy array that says which device it is on, like a cupy.ndarray."""

    device_id = 0


def test_arrays_on_another_device_are_refused():
    space = ArraySpace(DeviceArray, device_of=lambda a: a.device_id, current_device=lambda: 1)
    sig = Signature(
        "k", (Param("y", np.dtype(np.float32), True), Param("n", np.dtype(np.int32), False))
    )
    fake = FakeKernel()
    kernel = Kernel(sig, fake, space)
    y = np.zeros(3, np.float32).view(DeviceArray)
    with pytest.raises(ValueError, match="on device 0 but the kernel runs on device 1"):
        kernel(1, 1, y, 3)
    with pytest.raises(TypeError, match="must be a .*DeviceArray"):
        kernel(1, 1, np.zeros(3, np.float32), 3)
    y.device_id = 1
    kernel(1, 1, y, 3)
    assert len(fake.calls) == 1


def test_kernel_table_compiles_each_family_once_and_lazily():
    loaded = []

    class FakeModule:
        def __init__(self, family):
            self.family = family

        def get_function(self, name):
            return FakeKernel()

    def load(family):
        loaded.append(family)
        return FakeModule(family)

    table = kernels.Kernels(launch.HOST, load_module=load)
    assert loaded == []
    assert table.bias_act is table.bias_act
    table.bias_grad
    assert loaded == ["dense"]
    table.softmax_xent
    assert loaded.count("loss") == 1
    with pytest.raises(AttributeError, match="no CUDA kernel named 'nope'"):
        table.nope
