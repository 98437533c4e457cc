"""The issue-5 table for this machine: fastnn, NumPy from scratch and PyTorch side by side.

    python benchmarks/compare.py                      # every row, medians of 3 interleaved runs
    python benchmarks/compare.py --workloads mlp-128,cnn --runs 5
    python benchmarks/compare.py --markdown           # for the README / an issue note
    python benchmarks/compare.py --unset-openblas-env # adds NumPy with OPENBLAS_CORETYPE unset

Each run times every implementation once per row, in an order that rotates from run to run
(interleaved), so background load hits all columns alike; the table shows the median over runs.
Epoch rows train one epoch of the 60k MNIST training images at batch 128, SGD momentum 0.9,
lr 0.05, data preloaded as float32 in [0, 1]; every implementation starts from the same weights.
Run it with an interpreter that has torch (e.g. /work/torchvenv/bin/python) for the PyTorch
column; without torch the column says so. Install fastnn first (pip install .): the script
imports the installed package.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import machine  # noqa: E402
import runners  # noqa: E402
import workloads as W  # noqa: E402

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
KINDS = ("epoch", "infer:batch1", "infer:batch1000")
COLUMN_NAMES = {
    "fastnn": "fastnn",
    "numpy-scratch": "NumPy from scratch",
    "pytorch": "PyTorch",
    "numpy-scratch-unset": "NumPy, OPENBLAS env unset",
}


# ------------------------------------------------------------------------------------------------
# measuring


def load_mnist():
    import fastnn

    (x, y), _ = fastnn.datasets.mnist()
    x = (x.reshape(len(x), -1) * np.float32(1 / 255)).astype(np.float32)
    return x, y.astype(np.int64)


def time_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_per_call(fn, budget_s=0.3, max_calls=2000):
    """Median seconds per call of a fast callable, over as many calls as fit in budget_s."""
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_calls and (len(times) < 20 or time.perf_counter() < deadline):
        times.append(time_once(fn))
    return statistics.median(times)


def rows_for(workload_names):
    """The issue's rows for the chosen workloads: (workload, kind, anchor pytorch, anchor numpy,
    target)."""
    return [row for row in W.TARGETS if row[0] in workload_names]


def measure(rows, impls, runs, x, y, epoch_samples, log):
    """{(workload, kind): {impl: [value per run]}}; values are seconds (epoch, batch1) or
    samples/s (batch1000). Unavailable implementations map to their reason (a str)."""
    needed = {}
    for workload, kind, *_ in rows:
        needed.setdefault(workload, set()).add(kind)
    results = {(w, k): {} for w, k, *_ in rows}
    runners_by_key = {}
    n = len(x) if epoch_samples is None else epoch_samples
    scale = len(x) / n
    for workload in needed:
        for impl in impls:
            try:
                runner = runners.Runner(impl, workload, x[:n], y[:n])
            except runners.Unavailable as exc:
                for kind in needed[workload]:
                    results[(workload, kind)][impl] = str(exc)
                continue
            runner.step()()  # warm: allocations, thread pools, first-call costs
            runners_by_key[(workload, impl)] = runner
            for kind in needed[workload]:
                results[(workload, kind)][impl] = []
    for r in range(runs):
        for workload, kind, *_ in rows:
            available = [i for i in impls if (workload, i) in runners_by_key]
            order = (
                available[r % len(available) :] + available[: r % len(available)]
                if available
                else []
            )
            for impl in order:
                runner = runners_by_key[(workload, impl)]
                if kind == "epoch":
                    value = time_once(runner.epoch()) * scale
                elif kind == "infer:batch1":
                    value = time_per_call(runner.infer(1))
                else:
                    batch = 1000
                    predict = runner.infer(batch)
                    predict()
                    value = batch / time_per_call(predict, budget_s=0.5, max_calls=200)
                results[(workload, kind)][impl].append(value)
                log(
                    f"run {r + 1}/{runs} {workload:12s} {kind:16s} {impl:14s} {fmt_value(kind, value)}"
                )
    return results


def measure_in_subprocess(args, env_changes, impls):
    """Run this script for `impls` in a child with the environment changed; its JSON results."""
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--json",
        "-",
        "--quiet",
        "--impls",
        ",".join(impls),
        "--workloads",
        ",".join(args.workloads),
        "--runs",
        str(args.runs),
        "--threads",
        str(args.threads),
        "--no-peak",
    ]
    if args.epoch_samples:
        cmd += ["--epoch-samples", str(args.epoch_samples)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child run failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


# ------------------------------------------------------------------------------------------------
# formatting


def fmt_value(kind, value):
    if isinstance(value, str):
        return "n/a"
    if kind == "epoch":
        return f"{value:.2f} s"
    if kind == "infer:batch1":
        return f"{value * 1e6:.0f} us"
    return f"{value / 1e3:.0f}k/s"


def faster_by(kind, mine, theirs):
    """How many times faster `mine` is than `theirs` (> 1 is faster)."""
    if kind == "infer:batch1000":
        return mine / theirs
    return theirs / mine


def fmt_target(kind, target):
    if isinstance(target, str):
        return ">= " + target.replace("x pytorch", "x PyTorch")
    if kind == "infer:batch1000":
        return f">= {target / 1e3:.0f}k/s"
    return f"<= {fmt_value(kind, target)}"


def row_label(workload, kind):
    wl = W.WORKLOADS[workload]
    names = {
        "mlp-512-256": "MLP 784-512-256-10",
        "mlp-128": "MLP 784-128-10",
        "cnn": "CNN (32,64 5x5, fc 128)",
        "lenet5": "LeNet-5",
    }
    what = {
        "epoch": "one epoch",
        "infer:batch1": "inference, batch 1",
        "infer:batch1000": "inference, batch 1000",
    }[kind]
    return f"{names.get(workload, wl.name)}, {what}"


def gflops(workload, kind, value):
    wl = W.WORKLOADS[workload]
    if kind == "epoch":
        return wl.train_flops() * 60000 / value / 1e9
    if kind == "infer:batch1":
        return wl.forward_flops() / value / 1e9
    return wl.forward_flops() * value / 1e9


def fmt_gflops(g):
    return f"{g:.0f}" if g >= 10 else f"{g:.1f}"


def table(headers, rows, markdown):
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*headers), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def cost_vs_target(kind, value, target, pytorch):
    """How many times the target's cost the measurement is (<= 1 meets it), or None."""
    if isinstance(target, str):  # "2x pytorch", a throughput
        return None if pytorch is None else 2 * pytorch / value
    return target / value if kind == "infer:batch1000" else value / target


def build_report(rows, results, columns, peak, markdown):
    headers = ["workload"] + [COLUMN_NAMES[c] for c in columns]
    others = [c for c in ("numpy-scratch", "pytorch") if c in columns]
    have_fastnn = "fastnn" in columns
    if have_fastnn:
        headers += [f"fastnn vs {COLUMN_NAMES[c]}" for c in others]
        headers += ["target", "met (cost / target)", "fastnn GFLOP/s (% of peak)"]
    headers += [f"{COLUMN_NAMES[c]} GFLOP/s" for c in others]
    peak_isa, peak_value = peak
    out_rows = []
    for workload, kind, _anchor_torch, _anchor_numpy, target in rows:
        cell = results[(workload, kind)]
        medians = {
            c: (statistics.median(v) if isinstance(v, list) and v else None)
            for c, v in cell.items()
        }
        line = [row_label(workload, kind)]
        for c in columns:
            line.append(fmt_value(kind, medians.get(c)) if medians.get(c) is not None else "n/a")
        mine = medians.get("fastnn")
        if have_fastnn:
            for c in others:
                theirs = medians.get(c)
                line.append(
                    f"{faster_by(kind, mine, theirs):.2f}x faster"
                    if mine is not None and theirs is not None
                    else "n/a"
                )
            line.append(fmt_target(kind, target))
            cost = (
                None if mine is None else cost_vs_target(kind, mine, target, medians.get("pytorch"))
            )
            line.append("n/a" if cost is None else f"{'yes' if cost <= 1 else 'NO'} ({cost:.2f}x)")
            if mine is not None:
                g = gflops(workload, kind, mine)
                line.append(f"{fmt_gflops(g)} ({100 * g / peak_value:.0f}%)")
            else:
                line.append("n/a")
        for c in others:
            v = medians.get(c)
            line.append("n/a" if v is None else fmt_gflops(gflops(workload, kind, v)))
        out_rows.append(line)
    return table(headers, out_rows, markdown)


def header_lines(info, peak_info, args, torch_version, load_at_start):
    isa, value = (
        machine.best_isa_peak(peak_info, args.threads) if peak_info else ("unknown", float("nan"))
    )
    lines = [
        f"machine: {info['cpu']}, {info['cores']} cores; load average {load_at_start[0]:.2f} "
        f"at the start",
        f"FMA peak (measured, fp32, {args.threads} thread(s)): {value:.0f} GFLOP/s with {isa} "
        f"({peak_info.get('source') if peak_info else 'not measured'}; "
        + ", ".join(f"{k}: {v}" for k, v in (peak_info or {}).items() if k in ("avx512", "avx2"))
        + ")",
        f"fastnn {info['fastnn']}: GEMM path {info['fastnn_gemm_isa']}, "
        f"{info['fastnn_threads']} thread(s); "
        f"NumPy {info['numpy']} BLAS: {info['blas']}; OPENBLAS env: "
        + ", ".join(
            f"{k}={v}"
            for k, v in info["openblas_env"].items()
            if v is not None or k in OPENBLAS_VARS
        ),
        f"PyTorch: {torch_version or 'not importable here (column skipped)'}",
        f"medians of {args.runs} interleaved runs, {args.threads} thread(s) per column; "
        f"batch {W.BATCH}, SGD momentum {W.MOMENTUM}, lr {W.LR}"
        + (
            f"; epochs timed on {args.epoch_samples} samples and scaled to 60000"
            if args.epoch_samples
            else ""
        ),
    ]
    return lines


# ------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--workloads",
        default=",".join(W.WORKLOADS),
        help=f"comma-separated, from {', '.join(W.WORKLOADS)} (default: all)",
    )
    p.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"rows to run, from {', '.join(KINDS)} (default: all)",
    )
    p.add_argument(
        "--impls",
        default=",".join(runners.IMPLS),
        help=f"columns, from {', '.join(runners.IMPLS)} (default: all)",
    )
    p.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads for every column: fastnn's kernels, NumPy's BLAS, PyTorch "
        "(default 2, as in the issue; 1 is steadier on a busy machine)",
    )
    p.add_argument(
        "--epoch-samples",
        type=int,
        default=None,
        help="time epochs on the first N samples and scale to 60000 (quick look)",
    )
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument(
        "--json",
        metavar="PATH",
        help="also write the raw results as JSON ('-' for "
        "stdout, which then carries only the JSON)",
    )
    p.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help="also run the NumPy column in a subprocess with "
        + " and ".join(OPENBLAS_VARS)
        + " unset",
    )
    p.add_argument("--no-peak", action="store_true", help="skip the FMA peak probe")
    p.add_argument("--quiet", action="store_true", help="no per-measurement progress lines")
    args = p.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    for name, chosen, allowed in (
        ("--workloads", args.workloads, W.WORKLOADS),
        ("--kinds", args.kinds, KINDS),
        ("--impls", args.impls, runners.IMPLS),
    ):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            p.error(
                f"{name}: expected some of {', '.join(allowed)}, got {', '.join(chosen) or 'none'}"
            )
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.epoch_samples is not None and not 128 <= args.epoch_samples <= 60000:
        p.error("--epoch-samples must be in [128, 60000]")
    return args


def main(argv=None):
    args = parse_args(argv)
    to_stdout_json = args.json == "-"
    log = (
        (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    )
    rows = [r for r in rows_for(args.workloads) if r[1] in args.kinds]
    if not rows:
        sys.exit("no rows: the chosen workloads and kinds have no targets in the issue's table")

    import torch_impl

    import fastnn

    fastnn.set_num_threads(args.threads)  # fastnn's OpenMP kernels and NumPy's BLAS
    torch_impl.THREADS = args.threads
    if torch_impl.available():
        torch_impl.setup_threads()
    torch_version = torch_impl.describe()
    info = machine.summary()
    peak_info = None if args.no_peak else machine.fma_peak()
    x, y = load_mnist()
    load_at_start = os.getloadavg()
    results = measure(rows, args.impls, args.runs, x, y, args.epoch_samples, log)
    columns = [
        c for c in args.impls if any(isinstance(results[(w, k)].get(c), list) for w, k, *_ in rows)
    ]
    unset_info = None
    if args.unset_openblas_env and "numpy-scratch" in args.impls:
        log("re-running NumPy from scratch with " + ", ".join(OPENBLAS_VARS) + " unset ...")
        child = measure_in_subprocess(args, {k: None for k in OPENBLAS_VARS}, ["numpy-scratch"])
        unset_info = child["machine"]
        for entry in child["results"]:
            key = (entry["workload"], entry["kind"])
            if key in results:
                results[key]["numpy-scratch-unset"] = entry["values"].get("numpy-scratch")
        columns.insert(columns.index("numpy-scratch") + 1, "numpy-scratch-unset")

    payload = {
        "machine": {
            **info,
            "fma_peak_gflops": peak_info,
            "pytorch": torch_version,
            "load_average_start": load_at_start,
            "load_average_end": os.getloadavg(),
        },
        "runs": args.runs,
        "epoch_samples": args.epoch_samples,
        "results": [{"workload": w, "kind": k, "values": results[(w, k)]} for w, k, *_ in rows],
    }
    if unset_info is not None:
        payload["machine"]["openblas_env_unset_blas"] = unset_info["blas"]
    if args.json:
        text = json.dumps(payload, indent=1, default=str)
        if to_stdout_json:
            print(text)
            return
        with open(args.json, "w") as f:
            f.write(text + "\n")

    peak = (
        machine.best_isa_peak(peak_info, args.threads) if peak_info else ("unknown", float("nan"))
    )
    lines = header_lines(info, peak_info, args, torch_version, load_at_start)
    if unset_info is not None:
        lines.append(f"NumPy with {' and '.join(OPENBLAS_VARS)} unset: BLAS {unset_info['blas']}")
    lines.append(
        f"load average at the end: {os.getloadavg()[0]:.2f} (other work on these cores "
        f"slows 2-thread runs badly; compare columns of one run, not across runs)"
    )
    prefix = "- " if args.markdown else ""
    print("\n".join(prefix + line for line in lines))
    print()
    print(build_report(rows, results, columns, peak, args.markdown))
    print()
    print(anchor_table(rows, args.markdown))


def anchor_table(rows, markdown):
    """The issue's anchors (measured on the reference machine), for reading the table above."""
    headers = ["workload (issue anchors)", "PyTorch CPU", "NumPy from scratch", "fastnn target"]
    out = [
        [row_label(w, k), fmt_value(k, t), fmt_value(k, n), fmt_target(k, target)]
        for w, k, t, n, target in rows
    ]
    return table(headers, out, markdown)


if __name__ == "__main__":
    main()
