"""Argument checking for all of fastnn: one rule and one message per kind of argument.

Used by the backends' kernels (arrays: dtype, shape, layout, finiteness), by layers, optimizers,
schedules, the trainer and the data helpers (sizes, rates, dtypes, input data). Each check names
the argument and says what was expected, so a user sees which call was wrong. Array checks take
the array module `xp` (numpy or cupy) of the backend that asks.

Inputs that are merely non-contiguous are copied; arrays a kernel writes into (outputs,
parameters updated in place) must already be C-contiguous, or the call is refused.
"""

import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# The compiled kernels index with 32-bit ints: bigger arrays are refused up front, before any
# allocation, on every backend alike.
MAX_ELEMENTS = 2**31 - 1


# ---- plain arguments ----------------------------------------------------------------------------


def integer(name, value, minimum=None):
    """A Python or NumPy integer (bools refused) >= minimum, returned as int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def integer_pair(name, value, minimum=None):
    """An integer or a pair of them, returned as a tuple of two ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair of integers, got {value!r}")
        return (integer(name, value[0], minimum), integer(name, value[1], minimum))
    value = integer(name, value, minimum)
    return (value, value)


def real(name, value, minimum=None, maximum=None, min_inclusive=True, below=None):
    """A finite real number (bools refused) within the bounds, returned as float: >= minimum
    (> with min_inclusive=False), <= maximum, < below."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if value < minimum or (not min_inclusive and value == minimum):
            op = ">=" if min_inclusive else ">"
            raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    if below is not None and value >= below:
        raise ValueError(f"{name} must be < {below}, got {value}")
    return value


def float_dtype(dtype, name="dtype"):
    """`dtype` as float32 or float64 (the two dtypes models and the kernels compute in)."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dtype.name}")
    return dtype


def is_plain(a, dtype):
    """Whether a host array is C-contiguous, aligned and of `dtype`: what a compiled kernel
    may take without a copy or a check (the caller vouches for shapes and overlap)."""
    return type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous and a.flags.aligned


# ---- arrays -------------------------------------------------------------------------------------


def _dtype_name(dtype):
    dtype = np.dtype(dtype)
    if not dtype.isnative:  # '>f4' is named float32 too, but it is not one we accept
        return f"{dtype.name} ({'big' if dtype.byteorder == '>' else 'little'}-endian)"
    return dtype.name


def contiguous(a, dtype=None, xp=np):
    """`a` as a C-contiguous array of `dtype`, copied only when it is not one already. On the
    host also aligned to its element size: a C-contiguous view can start at an odd byte offset,
    and compiled kernels must not load misaligned values."""
    if xp is np:
        return np.require(a, dtype, ["C_CONTIGUOUS", "ALIGNED"])
    return xp.ascontiguousarray(a, dtype=dtype)


def float_array(name, a, ndim, xp=np):
    """`a` as a C-contiguous float32/float64 array of `ndim` dimensions (copied only if strided)."""
    if not isinstance(a, xp.ndarray):
        raise TypeError(f"{name} must be a {xp.__name__} ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {_dtype_name(a.dtype)}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    return contiguous(a, xp=xp)


def writable_array(name, a, shape, dtype, xp=np):
    """An array the kernel writes into: exact shape and dtype, C-contiguous, writeable."""
    if not isinstance(a, xp.ndarray):
        raise TypeError(f"{name} must be a {xp.__name__} ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must be {_dtype_name(dtype)}, got {_dtype_name(a.dtype)}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (it is written in place)")
    if xp is np and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable (it is written in place)")
    if xp is np and not a.flags.aligned:
        raise ValueError(f"{name} must be aligned to its element size (it is written in place)")
    return a


def writable_float(name, a, xp=np):
    """A float32/float64 array updated in place (parameters, optimizer state)."""
    if not isinstance(a, xp.ndarray):
        raise TypeError(f"{name} must be a {xp.__name__} ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {_dtype_name(a.dtype)}")
    return writable_array(name, a, a.shape, a.dtype, xp)


def same_dtype(**arrays):
    """Refuse mixed float dtypes: every array given must share the first one's dtype."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{name} is {_dtype_name(a.dtype)} but {first_name} is "
                f"{_dtype_name(first.dtype)}; mixed dtypes are not supported"
            )
    return first.dtype


def expect_shape(name, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")


def finite(name, a, xp=np):
    if not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or infinity")


def labels(name, y, n, classes, xp=np):
    """Integer class indices of shape (n,), every one in [0, classes); returned as int64."""
    if not isinstance(y, xp.ndarray):
        raise TypeError(f"{name} must be a {xp.__name__} ndarray, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class indices, got dtype {_dtype_name(y.dtype)}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the logits, got {tuple(y.shape)}")
    if n:
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise ValueError(f"{name} must be in [0, {classes}), found {bad}")
    return contiguous(y, xp.int64, xp)


def conv_output_size(size, kernel, stride, padding, what="input"):
    out = (size + 2 * padding - kernel) // stride + 1
    if size + 2 * padding < kernel or out < 1:
        raise ValueError(
            f"kernel {kernel} does not fit the {what} of size {size} with padding {padding}"
            f" (output size would be {out})"
        )
    return out


def conv_args(x, w, b, stride, padding, xp=np):
    """Check conv2d's x (N,C,H,W), w (Co,C,kH,kW), b (Co,) or None; returns them and the output shape."""
    x = float_array("x", x, 4, xp)
    w = float_array("w", w, 4, xp)
    b = None if b is None else float_array("b", b, 1, xp)
    same_dtype(x=x, w=w, b=b)
    stride = integer("stride", stride, 1)
    padding = integer("padding", padding, 0)
    n, c, h, wd = x.shape
    co, ci, kh, kw = w.shape
    if ci != c:
        raise ValueError(
            f"w must have shape ({co}, {c}, kH, kW) for x with {c} channels, got {tuple(w.shape)}"
        )
    if kh < 1 or kw < 1 or co < 1:
        raise ValueError(f"w must have a non-empty kernel, got shape {tuple(w.shape)}")
    if b is not None:
        expect_shape("b", b, (co,))
    if n < 1 or c < 1 or h < 1 or wd < 1:  # an empty image is not made valid by padding
        raise ValueError(
            f"x must have at least one sample, one channel and one pixel, got {tuple(x.shape)}"
        )
    ho = conv_output_size(h, kh, stride, padding, "height")
    wo = conv_output_size(wd, kw, stride, padding, "width")
    if max(n * co * ho * wo, n * c * (h + 2 * padding) * (wd + 2 * padding)) > MAX_ELEMENTS:
        raise ValueError(
            f"padding {padding} with x of shape {tuple(x.shape)} and {co} output "
            f"channels makes arrays of more than {MAX_ELEMENTS} elements"
        )
    # a stride past the padded input gives one output per axis whatever its value: keep it small
    stride = min(stride, max(h, wd) + 2 * padding)
    return x, w, b, stride, padding, (n, co, ho, wo)


def pool_args(x_shape, kernel, stride):
    """Check max-pool sizes; returns (kernel, stride, output shape)."""
    kernel = integer("kernel", kernel, 1)
    stride = kernel if stride is None else integer("stride", stride, 1)
    if len(x_shape) != 4:
        raise ValueError(f"x must have 4 dimensions (N, C, H, W), got shape {tuple(x_shape)}")
    n, c, h, w = x_shape
    if n * c * h * w > MAX_ELEMENTS:
        # argmax holds int32 indices into each H*W plane, and a larger x is no MNIST-scale input
        raise ValueError(f"x of shape {tuple(x_shape)} has more than {MAX_ELEMENTS} elements")
    ho = conv_output_size(h, kernel, stride, 0, "height")
    wo = conv_output_size(w, kernel, stride, 0, "width")
    # a stride past the input gives one output per axis whatever its value: keep it small
    return kernel, min(stride, max(h, w)), (n, c, ho, wo)


def shape_tuple(name, shape):
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of integers, got {shape!r}") from None
    if len(shape) != 4 or any(s < 1 for s in shape):
        raise ValueError(f"{name} must be 4 positive sizes (N, C, H, W), got {shape}")
    return shape


def argmax_array(argmax, y_shape, plane, xp=np):
    """Max-pool argmax: integer indices into each (H*W) plane, all in [0, plane)."""
    if not isinstance(argmax, xp.ndarray):
        raise TypeError(f"argmax must be a {xp.__name__} ndarray, got {type(argmax).__name__}")
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax must be an integer array, got {_dtype_name(argmax.dtype)}")
    expect_shape("argmax", argmax, y_shape)
    if argmax.size:
        low, high = int(argmax.min()), int(argmax.max())
        if low < 0 or high >= plane:
            raise ValueError(
                f"argmax indices must be in [0, {plane}), found {low if low < 0 else high}"
            )
    return contiguous(argmax, xp.int32, xp)


def logits_size(logits):
    """(rows, classes) of 2-D logits, refused when either is 0."""
    n, classes = logits.shape
    if n < 1 or classes < 1:
        raise ValueError(f"logits must have at least one row and one class, got {logits.shape}")
    return n, classes


def smoothed_cross_entropy_args(logits, labels_, smoothing, xp=np):
    """(logits, labels, smoothing) checked for smoothed_cross_entropy: 2-D float logits with at
    least one row and class, labels in [0, classes), smoothing in [0, 1)."""
    logits = float_array("logits", logits, 2, xp)
    n, classes = logits_size(logits)
    labels_ = labels("labels", labels_, n, classes, xp)
    smoothing = real("smoothing", smoothing, minimum=0.0)
    if smoothing >= 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    return logits, labels_, smoothing


# ---- normalization, activation and augmentation kernels ----------------------------------------


def bn_args(x, gamma, beta, xp=np):
    """Check batchnorm's x (N, C) or (N, C, H, W), gamma and beta (C,); returns them."""
    if not isinstance(x, xp.ndarray):
        raise TypeError(f"x must be a {xp.__name__} ndarray, got {type(x).__name__}")
    if x.ndim not in (2, 4):
        raise ValueError(f"x must have shape (N, C) or (N, C, H, W), got {tuple(x.shape)}")
    x = float_array("x", x, x.ndim, xp)
    if min(x.shape) < 1:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    channels = x.shape[1]
    gamma = float_array("gamma", gamma, 1, xp)
    beta = float_array("beta", beta, 1, xp)
    same_dtype(x=x, gamma=gamma, beta=beta)
    expect_shape("gamma", gamma, (channels,))
    expect_shape("beta", beta, (channels,))
    return x, gamma, beta


def running_stats(running_mean, running_var, channels, dtype=np.float64, xp=np):
    """The running statistics: (C,) of `dtype` (float64 on the host backends), C-contiguous
    and writeable (updated in place)."""
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        writable_array(name, a, (channels,), dtype, xp)
    return running_mean, running_var


def bn_hyper(momentum, eps):
    """Batch norm's momentum in [0, 1] and eps > 0."""
    momentum = real("momentum", momentum, minimum=0.0, maximum=1.0)
    eps = real("eps", eps, minimum=0.0, min_inclusive=False)
    return momentum, eps


def saved_stats(mean, inv_std, channels, xp=np):
    """`mean` and `inv_std` as batchnorm_forward returned them: float64 (C,)."""
    for name, a in (("mean", mean), ("inv_std", inv_std)):
        if not isinstance(a, xp.ndarray) or a.dtype != np.float64 or a.shape != (channels,):
            raise TypeError(
                f"{name} must be a float64 array of shape ({channels},) (as "
                f"batchnorm_forward returns it)"
            )
    return contiguous(mean, xp=xp), contiguous(inv_std, xp=xp)


def slope(value):
    """A leaky ReLU's negative slope: a finite real >= 0."""
    return real("slope", value, minimum=0.0)


def affine_matrices(matrices, batch):
    """The augmentation's per-image affine maps: a host float64 array (batch, 6)."""
    if not isinstance(matrices, np.ndarray) or matrices.shape != (batch, 6):
        raise ValueError(f"matrices must be a numpy array of shape ({batch}, 6)")
    return np.require(matrices, np.float64, ["C_CONTIGUOUS", "ALIGNED"])
