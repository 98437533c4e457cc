"""Fuzzing fastnn.load: every damaged, tampered or foreign file raises ValueError; none crashes
or allocates more than a few MB. (load_idx has its own fuzz tests in test_datasets.py.)

Crafted cases run in-process; the random mutation campaign (truncation, bit flips, byte
overwrites, tampered JSON architectures, rewritten members) runs in a subprocess under an
address-space limit, so that a crash or a huge allocation fails one test instead of pytest.
"""

import io
import json
import os
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastnn
import fastnn_testing
from fastnn import nn

# Every model here is a few KB: a case peaking above this sized memory from a header.
ALLOC_LIMIT = 8 * 2**20


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(6 * 2 * 2, 16),
        nn.Sigmoid(),
        nn.Linear(16, 10),
        input_shape=(1, 10, 10),
    )


def mlp64():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
        dtype=np.float64,
        backend="numpy",
    )


def saved_bytes(make, tmp, seed=0):
    fastnn.seed(seed)
    model = make()
    path = os.path.join(tmp, "model.npz")
    model.save(path)
    with open(path, "rb") as f:
        return model, f.read()


def members_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(info, z.read(info.filename)) for info in z.infolist()]


def zip_bytes(members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, payload in members:
            z.writestr(name if isinstance(name, str) else name.filename, payload)
    return buf.getvalue()


def npy(array=None, *, header=None, data=b"", version=(1, 0)):
    """.npy bytes of `array`, or a hand-made header dict followed by `data`."""
    buf = io.BytesIO()
    if header is None:
        np.lib.format.write_array(buf, array, version=version, allow_pickle=True)
    else:
        writer = {
            (1, 0): np.lib.format.write_array_header_1_0,
            (2, 0): np.lib.format.write_array_header_2_0,
        }[version]
        writer(buf, header)
        buf.write(data)
    return buf.getvalue()


def header_json(data):
    for info, payload in members_of(data):
        if info.filename == "__fastnn__.npy":
            return json.loads(np.load(io.BytesIO(payload)).tobytes())
    raise AssertionError("no header")


def with_header(data, header):
    blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
    return zip_bytes(
        [
            (i.filename, npy(blob) if i.filename == "__fastnn__.npy" else p)
            for i, p in members_of(data)
        ]
    )


def with_member(data, name, payload):
    members = [(i.filename, p) for i, p in members_of(data) if i.filename != name]
    return zip_bytes(members + ([(name, payload)] if payload is not None else []))


def check_load(path, original):
    """load(path) raises ValueError naming the file, or gives the original weights; either way
    within ALLOC_LIMIT. Returns True when it loaded."""
    tracemalloc.reset_peak()
    try:
        model = fastnn.load(path)
    except ValueError as exc:
        assert os.fspath(path) in str(exc)
        loaded = False
    else:  # a harmless change (say, to an unused zip field): the weights must be intact
        state = model.state_dict()
        assert state.keys() == original.keys()
        for name, value in original.items():
            assert state[name].dtype == value.dtype and state[name].tobytes() == value.tobytes()
        loaded = True
    peak = tracemalloc.get_traced_memory()[1]
    assert peak < ALLOC_LIMIT, f"peak allocation {peak} bytes"
    return loaded


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


def crafted_cases(data):
    """name -> bytes: hand-made hostile files built from a real saved model."""
    header = header_json(data)
    weight = "0.weight.npy"
    w_shape = tuple(header["params"]["0.weight"]["shape"])
    cases = {
        # .npy headers claiming huge shapes (numpy's reader would allocate them up front)
        "header_member_claims_2**40_bytes": with_member(
            data,
            "__fastnn__.npy",
            npy(header={"descr": "|u1", "fortran_order": False, "shape": (2**40,)}, data=b"{}"),
        ),
        "header_member_claims_2**31_bytes": with_member(
            data,
            "__fastnn__.npy",
            npy(header={"descr": "|u1", "fortran_order": False, "shape": (2**31,)}, data=b"{}" * 8),
        ),
        "weight_claims_2**31_elements": with_member(
            data,
            weight,
            npy(header={"descr": "<f4", "fortran_order": False, "shape": (2**31,)}, data=bytes(64)),
        ),
        "weight_claims_huge_2d": with_member(
            data,
            weight,
            npy(
                header={"descr": "<f4", "fortran_order": False, "shape": (2**31, 2**31)},
                data=bytes(64),
            ),
        ),
        "weight_negative_shape": with_member(
            data,
            weight,
            npy(header={"descr": "<f4", "fortran_order": False, "shape": (-1, 4)}, data=bytes(64)),
        ),
        "weight_v2_header_huge": with_member(
            data,
            weight,
            npy(
                header={"descr": "<f4", "fortran_order": False, "shape": (2**40,)},
                data=bytes(64),
                version=(2, 0),
            ),
        ),
        "weight_version_3": with_member(data, weight, b"\x93NUMPY\x03\x00" + bytes(64)),
        "weight_big_endian": with_member(data, weight, npy(np.zeros(w_shape, ">f4"))),
        "weight_float64": with_member(data, weight, npy(np.zeros(w_shape, np.float64))),
        "weight_pickled_object_array": with_member(
            data, weight, npy(np.array([{"a": 1}, None], dtype=object))
        ),
        "header_pickled_object_array": with_member(
            data, "__fastnn__.npy", npy(np.array([header], dtype=object))
        ),
        "weight_structured_dtype": with_member(
            data, weight, npy(np.zeros(3, [("a", "<f4"), ("b", "O")]))
        ),
        "weight_truncated_data": with_member(data, weight, npy(np.zeros(w_shape, np.float32))[:-7]),
        "weight_extra_data": with_member(
            data, weight, npy(np.zeros(w_shape, np.float32)) + b"\0" * 8
        ),
        "header_2d": with_member(data, "__fastnn__.npy", npy(np.zeros((2, 2), np.uint8))),
        "header_not_object": with_header(data, [1, 2, 3]),
        "header_deeply_nested": with_member(
            data, "__fastnn__.npy", npy(np.frombuffer(b"[" * 200000, np.uint8))
        ),
        "header_huge_integer": with_member(
            data, "__fastnn__.npy", npy(np.frombuffer(b"1" * 100000, np.uint8))
        ),
        "header_nan_literals": with_member(
            data, "__fastnn__.npy", npy(np.frombuffer(b'{"format": NaN}', np.uint8))
        ),
        "header_over_1MB": with_member(data, "__fastnn__.npy", npy(np.zeros(2**20 + 10, np.uint8))),
        "member_not_npy": with_member(data, "notes.txt", b"hello"),
        "duplicate_member": zip_bytes(
            [(i.filename, p) for i, p in members_of(data)]
            + [("0.bias.npy", npy(np.zeros(4, np.float32)))]
        ),
        "lzma_members": zip_bytes([(i.filename, p) for i, p in members_of(data)], zipfile.ZIP_LZMA),
        "bzip2_members": zip_bytes(
            [(i.filename, p) for i, p in members_of(data)], zipfile.ZIP_BZIP2
        ),
        "plain_npy": npy(np.zeros(3)),
        "foreign_npz": zip_bytes([("a.npy", npy(np.arange(3)))]),
        "empty_zip": zip_bytes([]),
        "empty_file": b"",
    }
    edits = {
        "shape_2**31_in_params": lambda h: h["params"]["0.weight"].update(shape=[2**31, 1, 3, 3]),
        "linear_in_features_2**31": lambda h: h["architecture"]["layers"][7].update(
            in_features=2**31
        ),
        "conv_channels_2**31": lambda h: h["architecture"]["layers"][0].update(out_channels=2**31),
        "conv_kernel_2**40": lambda h: h["architecture"]["layers"][3].update(kernel_size=2**40),
        "input_shape_huge": lambda h: h["architecture"].update(input_shape=[2**62, 2**62, 1]),
        "input_shape_does_not_fit": lambda h: h["architecture"].update(input_shape=[1, 3, 3]),
        "layer_kwargs_unknown": lambda h: h["architecture"]["layers"][2].update(evil=1),
        "layers_not_list": lambda h: h["architecture"].update(layers={"a": 1}),
        "layer_type_dunder": lambda h: h["architecture"]["layers"][0].update(type="__class__"),
        "layer_type_dict": lambda h: h["architecture"]["layers"][0].update(type={"a": 1}),
        "layer_type_list": lambda h: h["architecture"]["layers"][1].update(type=["ReLU"]),
        "input_shape_infinity": lambda h: h["architecture"].update(input_shape=[float("inf")]),
        "kernel_size_nan": lambda h: h["architecture"]["layers"][0].update(
            kernel_size=float("nan")
        ),
        "params_not_dict": lambda h: h.update(params=[1]),
        "param_entry_null": lambda h: h["params"].update({"0.weight": None}),
        "format_version_float": lambda h: h.update(format_version=1.0000001),
        "dtype_object": lambda h: h["architecture"].update(dtype="object"),
        "dtype_list": lambda h: h["architecture"].update(dtype=["float32"]),
    }
    for name, edit in edits.items():
        h = json.loads(json.dumps(header))
        edit(h)
        cases[name] = with_header(data, h)
    return cases


def test_deflated_files_load(tmp_path):
    """np.savez_compressed output (deflate) is read like np.savez output."""
    model, data = saved_bytes(cnn, tmp_path)
    path = tmp_path / "deflated.npz"
    path.write_bytes(
        zip_bytes([(i.filename, p) for i, p in members_of(data)], zipfile.ZIP_DEFLATED)
    )
    loaded = fastnn.load(path).state_dict()
    for name, value in model.state_dict().items():
        assert loaded[name].tobytes() == value.tobytes()


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_crafted_files_raise_value_error(tmp_path, traced):
    model, data = saved_bytes(cnn, tmp_path)
    original = model.state_dict()
    path = tmp_path / "case.npz"
    cases = crafted_cases(data)
    assert len(cases) > 40
    for name, payload in cases.items():
        path.write_bytes(payload)
        assert not check_load(path, original), f"{name} loaded"


# ---- random mutations, in a subprocess ----------------------------------------------------------

JSON_VALUES = [
    2**31,
    2**63,
    -1,
    0,
    1e308,
    -0.0,
    "x",
    "",
    None,
    True,
    [],
    {},
    [2**31] * 4,
    [[[[[]]]]],
    {"type": "Linear"},
    "float32",
    2**200,
]


def mutate_json(node, rng, depth=0):
    """A copy of a JSON value with one leaf replaced, a key removed or added."""
    if isinstance(node, dict) and node and (depth < 6 and rng.random() < 0.8):
        key = sorted(node)[rng.integers(len(node))]
        out = dict(node)
        roll = rng.random()
        if roll < 0.1:
            del out[key]
        elif roll < 0.15:
            out["extra"] = JSON_VALUES[rng.integers(len(JSON_VALUES))]
        else:
            out[key] = mutate_json(node[key], rng, depth + 1)
        return out
    if isinstance(node, list) and node and (depth < 6 and rng.random() < 0.8):
        i = rng.integers(len(node))
        out = list(node)
        if rng.random() < 0.1:
            del out[i]
        else:
            out[i] = mutate_json(node[i], rng, depth + 1)
        return out
    if isinstance(node, int) and not isinstance(node, bool) and rng.random() < 0.5:
        return int(node) + int(rng.integers(-2, 3))
    return JSON_VALUES[rng.integers(len(JSON_VALUES))]


def mutate(data, header, rng):
    """One random mutation of a saved model's bytes."""
    kind = rng.choice(
        ["truncate", "flip", "flips", "byte", "zero_run", "json", "member", "swap_members"]
    )
    if kind == "truncate":
        return kind, data[: rng.integers(len(data))]
    if kind in ("flip", "flips"):
        raw = bytearray(data)
        for _ in range(1 if kind == "flip" else rng.integers(2, 9)):
            raw[rng.integers(len(raw))] ^= 1 << rng.integers(8)
        return kind, bytes(raw)
    if kind == "byte":
        raw = bytearray(data)
        raw[rng.integers(len(raw))] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF])
        return kind, bytes(raw)
    if kind == "zero_run":
        raw = bytearray(data)
        start = rng.integers(len(raw))
        raw[start : start + rng.integers(1, 64)] = bytes([rng.choice([0, 0xFF])]) * 64
        return kind, bytes(raw[: len(data)])
    if kind == "json":
        return kind, with_header(data, mutate_json(header, rng))
    members = members_of(data)
    if kind == "member":  # a member rewritten: its .npy header or its data damaged
        i = rng.integers(len(members))
        raw = bytearray(members[i][1])
        at = rng.integers(min(len(raw), 128)) if rng.random() < 0.7 else rng.integers(len(raw))
        raw[at] = rng.integers(256)
        members[i] = (members[i][0], bytes(raw))
        return kind, zip_bytes(members)
    order = rng.permutation(len(members))  # contents moved to other names
    return kind, zip_bytes(
        [(members[i][0], members[j][1]) for i, j in zip(range(len(members)), order)]
    )


def mutation_campaign(tmp, iterations, seed):
    """Run `iterations` random mutations of two saved models; returns {kind: [cases, loaded]}.
    Each case is written to stderr before it runs, so a crash names it."""
    import resource

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    # room for the run itself, not for an allocation sized from a damaged header
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))
    stats = {}
    tracemalloc.start()
    path = os.path.join(tmp, "case.npz")
    for make in (cnn, mlp64):
        model, data = saved_bytes(make, tmp)
        original, header = model.state_dict(), header_json(data)
        for i in range(iterations // 2):
            rng = np.random.default_rng((seed, i, make is cnn))
            kind, payload = mutate(data, header, rng)
            print(
                f"case {make.__name__} seed {seed} iteration {i}: {kind}",
                file=sys.stderr,
                flush=True,
            )
            with open(path, "wb") as f:
                f.write(payload)
            counts = stats.setdefault(kind, [0, 0])
            counts[0] += 1
            counts[1] += check_load(path, original)
    return stats


def test_random_mutations_never_crash_or_allocate(tmp_path):
    iterations = int(os.environ.get("FASTNN_FUZZ_LOAD_ITERATIONS", 600))
    seed = int(os.environ.get("FASTNN_FUZZ_SEED", 0))
    stats = fastnn_testing.run_in_child(
        __file__, f"t.mutation_campaign({str(tmp_path)!r}, {iterations}, {seed})", timeout=900
    )
    assert sum(cases for cases, _ in stats.values()) == iterations // 2 * 2
    # every kind of mutation ran, and most were refused (a few flips hit unused zip fields)
    assert len(stats) == 8, stats
    assert sum(loaded for _, loaded in stats.values()) < iterations // 4, stats
