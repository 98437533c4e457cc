"""The CUDA backend (CuPy). Importing this package imports neither CuPy nor the backend:
`probe()` says whether it can run here, and `CudaBackend` is loaded on first use."""

import importlib

# the extras bring CuPy with the CUDA libraries it loads (NVRTC, cuBLAS) as wheels
# (plain package names: "fastnn" on PyPI is another project)
_PIP_HINT = (
    'pip install "cupy-cuda12x[ctk]" (CUDA 12) or "cupy-cuda13x[ctk]" (CUDA 13); in a '
    'fastnn checkout: pip install ".[cuda12]" or ".[cuda13]"'
)
_probed = []


def _no_device_reason(cupy, exc=None):
    """Why no device can be used, in words that say what to do: a machine without an NVIDIA
    GPU or driver gets no advice to upgrade a driver it does not have."""
    runtime = getattr(getattr(cupy, "cuda", None), "runtime", None)
    try:
        driver = runtime.driverGetVersion()  # 0 when no driver is installed; needs no device
    except Exception:
        driver = 0
    if not driver:
        return (
            "no NVIDIA GPU or driver found (CuPy is installed, but this machine has no CUDA driver)"
        )
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "no CUDA device"
    if "InsufficientDriver" in text:
        try:
            needed = runtime.runtimeGetVersion()
        except Exception:
            needed = 0
        return (
            f"the NVIDIA driver supports CUDA {driver // 1000}.{driver % 1000 // 10}, older "
            f"than the CUDA {needed // 1000}.{needed % 1000 // 10} CuPy was built for: "
            f"upgrade the driver or install the CuPy for your CUDA ({_PIP_HINT}) ({text})"
        )
    if "NoDevice" in text or exc is None:
        return f"no NVIDIA GPU found (the driver is installed but sees no device: {text})"
    return f"no usable CUDA device: {text}"


def _find_reason():
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); install it with: {_PIP_HINT}"
    except Exception as exc:  # a broken install can raise anything at import
        return f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return _no_device_reason(cupy)
        # A tiny allocation and a stream sync: the quick honest test of the device.
        ones = cupy.ones((2, 2), dtype=cupy.float32)
        cupy.cuda.get_current_stream().synchronize()
    except Exception as exc:
        return _no_device_reason(cupy, exc)
    try:
        cupy.cuda.nvrtc.getVersion()  # NVRTC compiles the kernels; CuPy loads it lazily
    except Exception as exc:
        return (
            f"CuPy cannot load NVRTC, which compiles fastnn's kernels ({type(exc).__name__}: "
            f"{exc}); install the CUDA toolkit, or: {_PIP_HINT}"
        )
    # Every library a training step uses, loaded now rather than in the middle of a fit:
    # cuBLAS (the GEMMs) and CuPy's random generator (Dropout's masks).
    for library, use in (
        ("cuBLAS", lambda: cupy.matmul(ones, ones)),
        (
            "CuPy's random generator (cuRAND)",
            lambda: cupy.random.default_rng(0).random(2, dtype=cupy.float32),
        ),
    ):
        try:
            use()
            cupy.cuda.get_current_stream().synchronize()
        except Exception as exc:
            return (
                f"CuPy cannot run {library}, which a training step uses "
                f"({type(exc).__name__}: {exc}); install the CUDA libraries, or: {_PIP_HINT}"
            )
    return None


def probe():
    """None if the cuda backend can run here, else the reason it cannot (checked once)."""
    if not _probed:
        _probed.append(_find_reason())
    return _probed[0]


def __getattr__(name):
    if name == "CudaBackend":
        return importlib.import_module(".backend", __name__).CudaBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
