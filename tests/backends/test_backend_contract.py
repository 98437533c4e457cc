"""Every backend subclasses fastnn.backends.base.Backend, and no backend subclasses another: the
compiled and CUDA backends write every contract kernel themselves, so none falls back to
generic code or (as cpu once did by subclassing the NumPy reference) to the reference itself,
which a cpu-vs-numpy test would then compare with itself."""

import inspect

import pytest

from fastnn import backends
from fastnn.backends.base import Backend
from fastnn.backends.cuda.backend import CudaBackend
from fastnn.backends.numpy import NumpyBackend


def _cpu_class():
    pytest.importorskip("fastnn._kernels.dense")
    from fastnn.backends.cpu import CpuBackend

    return CpuBackend


def classes():
    return {"numpy": NumpyBackend, "cpu": _cpu_class(), "cuda": CudaBackend}


def _owner(cls, name):
    """The class in cls's MRO that defines `name`."""
    return next(c for c in cls.__mro__ if name in vars(c))


@pytest.mark.parametrize("name", ["numpy", "cpu", "cuda"])
def test_every_backend_is_a_backend_and_no_backend_subclasses_another(name):
    all_classes = classes()
    cls = all_classes[name]
    assert issubclass(cls, Backend)
    for other_name, other in all_classes.items():
        if other_name != name:
            assert not issubclass(cls, other) and not issubclass(other, cls)


@pytest.mark.parametrize("name", ["numpy", "cpu", "cuda"])
def test_every_contract_kernel_is_written_by_the_backend_itself(name):
    """Defined in the backend's class or its own kernel mixin (cpu_layers.CpuLayerKernels...),
    never in Backend or in a class another backend uses."""
    all_classes = classes()
    cls = all_classes[name]
    others = {
        c for other_name, other in all_classes.items() if other_name != name for c in other.__mro__
    }
    for kernel in Backend.KERNELS + tuple(sorted(cls.optional)):
        owner = _owner(cls, kernel)
        assert owner is not Backend and owner not in others, f"{name}.{kernel} from {owner}"


@pytest.mark.parametrize("name", ["numpy", "cpu", "cuda"])
def test_every_kernel_takes_the_contract_keywords(name):
    """A caller (the plan, the losses) passes out=, check=, check_finite=, need_dx= and work=
    the same way to every backend."""
    cls = classes()[name]
    for kernel in (
        Backend.KERNELS
        + ("conv2d_maxpool_forward", "conv2d_maxpool_backward")
        + tuple(sorted(cls.optional))
    ):
        contract = inspect.signature(getattr(Backend, kernel)).parameters
        mine = inspect.signature(getattr(cls, kernel)).parameters
        absent = [p for p in contract if p not in mine]
        assert absent == [], f"{name}.{kernel} lacks {absent}"


def test_cpu_writes_its_fused_and_whole_step_kernels():
    cls = _cpu_class()
    for name in (
        "conv2d_maxpool_forward",
        "conv2d_maxpool_backward",
        "conv2d_maxpool_fusable",
        "sgd_step_many",
        "adam_step_many",
        "count_correct",
        "row_gatherer",
        "dense_chain_forward",
    ):
        assert _owner(cls, name) is not Backend, name
    assert cls.fills_out and cls.fuses_conv2d_maxpool and cls.runs_dense_chain


def test_capabilities_are_data():
    assert NumpyBackend.dtypes == Backend.dtypes and len(CudaBackend.dtypes) == 1
    assert NumpyBackend.fills_out == frozenset()
    assert CudaBackend.fills_out == {"linear_backward", "conv2d_backward"}
    assert set(Backend.KERNELS) - {"sgd_step", "adam_step"} <= _cpu_class().fills_out
    assert not NumpyBackend.fuses_conv2d_maxpool and not CudaBackend.fuses_conv2d_maxpool
    assert NumpyBackend.optional == _cpu_class().optional == set(Backend.OPTIONAL_KERNELS)
    assert CudaBackend.optional == frozenset()


def test_a_missing_optional_kernel_says_which_backends_have_it():
    class Bare(Backend):
        name = "bare"

    with pytest.raises(ValueError, match="smoothed_cross_entropy kernel.*'bare' has none"):
        Bare().smoothed_cross_entropy(None, None)
    with pytest.raises(ValueError, match="gather_affine kernel"):
        Bare().gather_affine(None, None, None)


def test_the_registry_takes_a_backend_object_and_refuses_anything_else():
    numpy = backends.get("numpy")
    assert backends.get(numpy) is numpy
    with pytest.raises(TypeError, match="backend must be one of"):
        backends.get(object())
