"""The one table `pytest benchmarks --benchmark-only` ends with (at most 100 columns).

Each benchmark of bench_training.py adds its median time with `add`; `table` lays them out one
row per workload and measure: fastnn, NumPy from scratch, PyTorch and ONNX Runtime, each other
column's time over fastnn's (above 1: fastnn is faster), and fastnn's GFLOP/s against the
measured FMA peak of the widest ISA at fastnn's thread count. The flops are the direct
algorithm's count: a CNN whose convolutions run Winograd can show more than 100% of the peak
(a line under the table says so).
"""

import math

WIDTH = 100
COLUMNS = (
    ("fastnn", "fastnn"),
    ("numpy-scratch", "NumPy"),
    ("pytorch", "PyTorch"),
    ("onnxruntime", "ORT"),
)
# measure -> (label, unit scale): epochs in seconds, batch-1 calls in microseconds, batch-1000
# calls in milliseconds
MEASURES = {
    "epoch": ("epoch s", 1.0),
    "infer:batch1": ("b1 us", 1e6),
    "infer:batch1000": ("b1000 ms", 1e3),
}


class Results:
    def __init__(self):
        self.rows = {}  # (workload, measure) -> {"flops": .., impl: seconds}

    def add(self, workload, measure, impl, seconds, flops=None):
        row = self.rows.setdefault((workload, measure), {})
        row[impl] = seconds
        if flops is not None:
            row["flops"] = flops

    def __bool__(self):
        return bool(self.rows)


def _num(value, scale=1.0):
    if value is None:
        return "-"
    v = value * scale
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def table(results, peak_isa, peak_gflops, header_lines=()):
    """The summary as a list of lines, none wider than WIDTH."""
    order = {m: i for i, m in enumerate(MEASURES)}
    head = (
        f"{'workload':<12}{'measure':<9}"
        + "".join(f"{name:>9}" for _, name in COLUMNS)
        + "".join(f"{'x' + name:>9}" for _, name in COLUMNS[1:])
        + f"{'GFLOP/s':>8}"
        + f"{'%peak':>6}"
    )
    lines = list(header_lines)
    lines += [
        "x<col>: that column's time / fastnn's (above 1: fastnn is faster); "
        f"peak: {peak_isa} FMA, {_num(peak_gflops)} GFLOP/s",
        head,
        "-" * len(head),
    ]
    over_peak = False
    for (workload, measure), row in sorted(
        results.rows.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))
    ):
        label, scale = MEASURES.get(measure, (measure, 1.0))
        fast = row.get("fastnn")
        cells = "".join(f"{_num(row.get(impl), scale):>9}" for impl, _ in COLUMNS)
        ratios = "".join(
            f"{_num(row[impl] / fast) if fast and row.get(impl) else '-':>9}"
            for impl, _ in COLUMNS[1:]
        )
        gflops = row["flops"] / fast / 1e9 if fast and row.get("flops") else None
        pct = (
            f"{100 * gflops / peak_gflops:.0f}%"
            if gflops and peak_gflops and not math.isnan(peak_gflops)
            else "-"
        )
        over_peak |= bool(gflops and peak_gflops and gflops > peak_gflops)
        lines.append(f"{workload:<12}{label:<9}{cells}{ratios}{_num(gflops):>8}{pct:>6}")
    if over_peak:
        lines.append(
            "GFLOP/s counts a direct convolution's flops; Winograd's does fewer multiplies, "
            "hence %peak > 100%"
        )
    return [line[:WIDTH] for line in lines]
