"""The examples' pictures: test digits with predictions, loss and accuracy curves, the
confusion matrix and the most confident mistakes, as PNGs.

matplotlib is optional (`pip install matplotlib`); `missing_reason()` says when it is not
there. Figures are drawn with matplotlib's object API on the Agg canvas, so nothing here
touches pyplot's global state or needs a display.
"""

import os

import numpy as np

# Plain dependencies in hints: "fastnn" on PyPI is another project (this one is fastnn-mnist)
INSTALL_HINT = 'pip install matplotlib (in a fastnn checkout: pip install ".[plot]")'
PLOT_NAMES = ("digits", "curves", "confusion", "mistakes")
# Pixels per inch of the PNGs: twice the 80 of a plain screen, so that text stays sharp on a
# high-DPI one (the curves are 1280x512 pixels).
DPI = 160


def missing_reason():
    """None when matplotlib can be used, else one line saying what is missing."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); {INSTALL_HINT}"
    return None


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _image_grid(fig, images, titles, colors, columns):
    rows = -(-len(images) // columns)
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(images[k], cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(titles[k], color=colors[k], fontsize=9)


def digits(images, labels, predicted, count=32, columns=8):
    """The first `count` test digits, titled with the prediction (red when wrong)."""
    count = min(count, len(images))
    fig = _figure(columns * 1.0, -(-count // columns) * 1.15 + 0.3)
    titles = [
        f"{p}" if p == t else f"{p} (true {t})" for p, t in zip(predicted[:count], labels[:count])
    ]
    colors = ["black" if p == t else "red" for p, t in zip(predicted[:count], labels[:count])]
    _image_grid(fig, images[:count], titles, colors, columns)
    fig.suptitle("test digits and predictions (red: wrong)", fontsize=10)
    return fig


def curves(history):
    """Loss and accuracy per epoch, training and (when held out) validation."""
    fig = _figure(8, 3.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, history[key], "o-", label="training")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    ax_loss.set_yscale("log")
    return fig


def confusion_matrix(labels, predicted, classes=10):
    """counts[true, predicted]."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def confusion(labels, predicted, classes=10):
    """The confusion matrix with every count written in its cell."""
    counts = confusion_matrix(labels, predicted, classes)
    fig = _figure(5.2, 4.6)
    ax = fig.subplots()
    # log colours so the few off-diagonal errors show next to the ~1000 correct per class
    shown = np.log1p(counts)
    ax.imshow(shown, cmap="Blues")
    for i in range(classes):
        for j in range(classes):
            if counts[i, j]:
                dark = shown[i, j] > 0.6 * shown.max()
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    errors = int(counts.sum() - np.trace(counts))
    ax.set_title(
        f"confusion matrix ({errors:,} error{'s' if errors != 1 else ''} in {int(counts.sum()):,})",
        fontsize=10,
    )
    return fig


def confident_mistakes(images, labels, proba, count=16, columns=8):
    """The wrong predictions the model was surest of, titled 'pred p%/true'."""
    predicted = proba.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = proba[wrong, predicted[wrong]]
    chosen = wrong[np.argsort(-confidence, kind="stable")][:count]
    fig = _figure(columns * 1.0, max(1, -(-len(chosen) // columns)) * 1.2 + 0.3)
    if len(chosen) == 0:
        fig.text(0.5, 0.5, "no mistakes", ha="center", va="center")
        return fig
    titles = [
        f"{predicted[k]} {100 * proba[k, predicted[k]]:.0f}%\ntrue {labels[k]}" for k in chosen
    ]
    _image_grid(fig, images[chosen], titles, ["red"] * len(chosen), columns)
    fig.suptitle("most confident mistakes (predicted, confidence, true)", fontsize=10)
    return fig


def write_all(directory, prefix, images, labels, proba, history):
    """Write PREFIX_{digits,curves,confusion,mistakes}.png into `directory` (created if
    needed); return the paths. images: uint8 (N, 28, 28); proba: (N, classes)."""
    os.makedirs(directory, exist_ok=True)
    images = np.asarray(images).reshape(len(images), *np.asarray(images).shape[-2:])
    labels = np.asarray(labels)
    proba = np.asarray(proba)
    predicted = proba.argmax(axis=1)
    figures = {
        "digits": digits(images, labels, predicted),
        "curves": curves(history),
        "confusion": confusion(labels, predicted, proba.shape[1]),
        "mistakes": confident_mistakes(images, labels, proba),
    }
    paths = []
    for name in PLOT_NAMES:
        path = os.path.join(directory, f"{prefix}_{name}.png")
        figures[name].savefig(path)
        paths.append(path)
    return paths
