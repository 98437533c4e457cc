"""The CUDA backend (CuPy). Importing this package imports neither CuPy nor the backend:
`probe()` says whether it can run here, and `CudaBackend` is loaded on first use."""
import importlib

# the extras bring CuPy with the CUDA libraries it loads (NVRTC, cuBLAS) as wheels
_PIP_HINT = "pip install fastnn[cuda12] (CUDA 12) or pip install fastnn[cuda13] (CUDA 13)"
_probed = []


def _find_reason():
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); install it with: {_PIP_HINT}"
    except Exception as exc:  # a broken install can raise anything at import
        return f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        # A tiny allocation is the quick honest test: it fails at once without a driver
        # (cudaErrorInsufficientDriver) or without a device (cudaErrorNoDevice).
        cupy.zeros(1, dtype=cupy.float32)
        cupy.cuda.get_current_stream().synchronize()
    except Exception as exc:
        return f"no usable CUDA device: {type(exc).__name__}: {exc}"
    try:
        cupy.cuda.nvrtc.getVersion()  # NVRTC compiles the kernels; CuPy loads it lazily
    except Exception as exc:
        return (f"CuPy cannot load NVRTC, which compiles fastnn's kernels ({type(exc).__name__}: "
                f"{exc}); install the CUDA toolkit, or: {_PIP_HINT}")
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
