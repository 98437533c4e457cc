"""The backend registry: get(), available(), and what a backend that cannot run says."""

import pytest

import fastnn
from fastnn import backends
from fastnn.backends import cpu as cpu_module
from fastnn.backends.cpu import CpuBackend
from fastnn.backends.numpy import NumpyBackend


def test_available_lists_every_backend_with_a_reason_when_it_cannot_run():
    found = backends.available()
    assert set(found) == set(backends.names()) == {"numpy", "cpu", "cuda"}
    assert found["numpy"] and found["cpu"]  # the installed package has its compiled kernels
    for availability in found.values():
        assert bool(availability) == availability.ok
        assert availability.ok or availability.reason  # never unavailable without saying why


def test_get_returns_one_instance_per_name():
    cpu = backends.get("cpu")
    assert isinstance(cpu, CpuBackend) and cpu.name == "cpu"
    assert backends.get("cpu") is cpu
    numpy_backend = backends.get("numpy")
    assert isinstance(numpy_backend, NumpyBackend) and numpy_backend.name == "numpy"
    assert not isinstance(numpy_backend, CpuBackend)


def test_get_passes_backend_objects_through():
    cpu = backends.get("cpu")
    assert backends.get(cpu) is cpu


@pytest.mark.parametrize(
    "name,error",
    [("gpu", ValueError), ("CPU", ValueError), ("", ValueError), (3, TypeError), (None, TypeError)],
)
def test_get_refuses_unknown_names(name, error):
    with pytest.raises(error, match="backend"):
        backends.get(name)


def test_unavailable_backend_raises_with_its_reason():
    found = backends.available()
    if found["cuda"]:
        pytest.skip("CUDA can run here")
    with pytest.raises(backends.BackendUnavailable, match="cuda"):
        backends.get("cuda")


def test_cpu_probe_says_how_to_fix_missing_kernels(monkeypatch):
    assert cpu_module.probe() is None
    monkeypatch.setattr(cpu_module, "_IMPORT_ERROR", ImportError("no module named loss"))
    reason = cpu_module.probe()
    assert "compiled kernels are missing" in reason and "pip install ." in reason


def test_cpu_kernels_are_compiled():
    # cpu must not silently be the reference: its kernels are extension modules
    from fastnn._kernels import conv, dense, gemm, loss, optim, pool, runtime

    for module in (conv, dense, gemm, loss, optim, pool, runtime):
        assert module.__file__.endswith((".so", ".pyd")), module.__file__
    for kernel in (
        "linear_forward",
        "linear_backward",
        "conv2d_forward",
        "conv2d_backward",
        "maxpool2d_forward",
        "maxpool2d_backward",
        "softmax_cross_entropy",
        "sgd_step",
        "adam_step",
    ):
        assert getattr(CpuBackend, kernel) is not getattr(NumpyBackend, kernel), kernel


def test_thread_functions_are_public():
    assert fastnn.get_num_threads() >= 1
    assert callable(fastnn.set_num_threads)
