"""Losses over class labels: softmax cross-entropy (one fused kernel) and MSE on one-hot targets.

`loss(backend, outputs, labels)` returns (mean loss, d loss / d outputs). The mean loss is a
backend scalar, not a Python float, so a device backend is not forced to synchronize each step.
Labels are int64 backend arrays already checked against the number of classes.
"""

from .validation import real


class Loss:
    name = ""

    def __call__(self, backend, outputs, labels):
        raise NotImplementedError

    def bind(self, backend):
        """fn(outputs, labels, out) -> (loss, d loss / d outputs) for the training loop; `out`
        is an array of outputs' shape the gradient may be written to (a step's buffer)."""
        return lambda outputs, labels, out: self(backend, outputs, labels)

    def value(self, backend, outputs, labels):
        """The mean loss alone (evaluation)."""
        return self(backend, outputs, labels)[0]

    def __repr__(self):
        return f"{type(self).__name__}()"


class CrossEntropy(Loss):
    """Mean cross-entropy of softmax(outputs) against the labels; outputs are logits.
    label_smoothing=s trains against (1 - s) on the label plus s / classes on every class."""

    name = "cross_entropy"

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = real("label_smoothing", label_smoothing, 0.0, below=1.0)

    def __repr__(self):
        if self.label_smoothing:
            return f"CrossEntropy(label_smoothing={self.label_smoothing})"
        return "CrossEntropy()"

    def __call__(self, backend, outputs, labels):
        if self.label_smoothing:
            return backend.smoothed_cross_entropy(
                outputs, labels, self.label_smoothing, check_finite=False
            )
        return backend.softmax_cross_entropy(outputs, labels, check_finite=False)

    def bind(self, backend):
        """`out` is the training loop's own buffer: the backend may trust it (its kernel
        still checks the labels' range), where its kernel fills out= arrays itself."""
        smoothing = self.label_smoothing
        if smoothing:
            if "smoothed_cross_entropy" not in backend.optional:
                raise ValueError(
                    f"label_smoothing needs a backend with the "
                    f"smoothed_cross_entropy kernel (numpy, cpu); {backend.name!r} "
                    f"has none"
                )
            kernel = backend.smoothed_cross_entropy
            if "smoothed_cross_entropy" in backend.fills_out:
                return lambda outputs, labels, out: kernel(
                    outputs, labels, smoothing, check_finite=False, out=out
                )
            return lambda outputs, labels, out: kernel(
                outputs, labels, smoothing, check_finite=False
            )
        kernel = backend.softmax_cross_entropy
        if "softmax_cross_entropy" in backend.fills_out:
            return lambda outputs, labels, out: kernel(
                outputs, labels, check_finite=False, out=out, check=False
            )
        return lambda outputs, labels, out: kernel(outputs, labels, check_finite=False)


class MSE(Loss):
    """Mean over samples and classes of (output - one_hot(label))^2."""

    name = "mse"

    def __init__(self):
        self._rows = {}  # (id(xp), n) -> arange(n), reused every step

    def _diff(self, backend, outputs, labels, out=None):
        xp = backend.xp
        n = outputs.shape[0]
        rows = self._rows.get((id(xp), n))
        if rows is None:
            rows = self._rows[(id(xp), n)] = xp.arange(n)
        if out is None:
            diff = outputs.copy()
        else:
            diff = out
            xp.copyto(diff, outputs)
        diff[rows, labels] -= 1
        return diff

    def bind(self, backend):
        return lambda outputs, labels, out: self(backend, outputs, labels, out)

    def __call__(self, backend, outputs, labels, out=None):
        diff = self._diff(backend, outputs, labels, out)
        loss = (diff * diff).mean()
        diff *= diff.dtype.type(2.0 / diff.size)
        return loss, diff

    def value(self, backend, outputs, labels):
        diff = self._diff(backend, outputs, labels)
        return (diff * diff).mean()


_BY_NAME = {"cross_entropy": CrossEntropy, "mse": MSE}


def get(loss):
    """A Loss from its name ("cross_entropy", "mse") or a Loss instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        key = loss.lower().replace("-", "_")
        if key in ("crossentropy", "softmax_cross_entropy", "ce"):
            key = "cross_entropy"
        if key in _BY_NAME:
            return _BY_NAME[key]()
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(_BY_NAME)}")
    raise TypeError(f"loss must be a name or a fastnn Loss, got {type(loss).__name__}")
