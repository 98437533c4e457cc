"""fastnn.datasets: shipped MNIST, IDX reading (and fuzzing it), splits, batches, scaling."""

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnn import datasets

# Published MD5s of the original (decompressed) MNIST files, as in fastnn/data/mnist/README.md.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TYPE_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CODE_OF = {np.dtype(v).newbyteorder("="): k for k, v in TYPE_CODES.items()}
# Fuzzed files are a few hundred bytes; anything near this means memory was sized from a header.
ALLOC_LIMIT = 4 * 2**20


def idx_bytes(array, type_code=None):
    """Encode ``array`` as IDX (independently of fastnn): header, then big-endian data."""
    array = np.asarray(array)
    code = CODE_OF[array.dtype.newbyteorder("=")] if type_code is None else type_code
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(TYPE_CODES[code]).tobytes()


def write(directory, name, payload):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(payload)
    return path


def reference_decode(payload):
    """A deliberately naive IDX decoder used as the oracle for the fuzz tests.

    Returns the array, or None where the bytes are not a valid IDX file.
    """
    if payload[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error):
            return None
    if len(payload) < 4 or payload[0] or payload[1] or payload[2] not in TYPE_CODES:
        return None
    ndim = payload[3]
    if not 1 <= ndim <= 4 or len(payload) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", payload[4 : 4 + 4 * ndim])
    dtype = np.dtype(TYPE_CODES[payload[2]])
    if (
        0 in shape
        or int(np.prod(shape, dtype=object)) * dtype.itemsize != len(payload) - 4 - 4 * ndim
    ):
        return None
    return np.frombuffer(payload, dtype, offset=4 + 4 * ndim).reshape(shape)


def check_against_reference(path, payload):
    """load_idx must return what the oracle decodes, or raise ValueError naming the file,
    and must never allocate more than ALLOC_LIMIT on the way."""
    expected = reference_decode(payload)
    tracemalloc.reset_peak()
    try:
        got = datasets.load_idx(path)
    except ValueError as exc:
        assert path in str(exc)
        assert expected is None, f"rejected a valid file: {exc}"
    else:
        assert expected is not None, "accepted an invalid file"
        assert got.dtype == expected.dtype.newbyteorder("=") and got.dtype.isnative
        np.testing.assert_array_equal(got, expected)
    peak = tracemalloc.get_traced_memory()[1]
    assert peak < ALLOC_LIMIT, f"peak allocation {peak} bytes"


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


# ------------------------------------------------------------------------------------------
# shipped MNIST


def test_mnist_shapes_dtypes_and_labels():
    (x_train, y_train), (x_test, y_test) = datasets.mnist()
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert y_test.shape == (10000,) and y_test.dtype == np.uint8
    for labels in (y_train, y_test):
        assert labels.min() == 0 and labels.max() == 9
        assert len(np.unique(labels)) == 10
    assert all(a.flags.c_contiguous for a in (x_train, y_train, x_test, y_test))


def test_mnist_is_byte_identical_to_the_published_files():
    (x_train, y_train), (x_test, y_test) = datasets.mnist()
    for name, array, code in (
        ("train-images-idx3-ubyte", x_train, 3),
        ("train-labels-idx1-ubyte", y_train, 1),
        ("t10k-images-idx3-ubyte", x_test, 3),
        ("t10k-labels-idx1-ubyte", y_test, 1),
    ):
        assert array.ndim == code
        assert hashlib.md5(idx_bytes(array)).hexdigest() == MNIST_MD5[name], name


def test_mnist_returns_arrays_the_caller_may_change():
    (x_train, y_train), _ = datasets.mnist()
    before = int(x_train[0].sum()), int(y_train[0])
    x_train[0] = 255
    y_train[0] = 99
    (x_again, y_again), _ = datasets.mnist()
    assert (int(x_again[0].sum()), int(y_again[0])) == before


def test_mnist_rejects_a_damaged_copy(tmp_path, monkeypatch):
    for name in os.listdir(datasets._MNIST_DIR):
        shutil.copy(os.path.join(datasets._MNIST_DIR, name), tmp_path)
    # Still a perfectly valid IDX file, one label changed: only the checksum can tell.
    labels = datasets.load_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
    labels[0] = (labels[0] + 1) % 10
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    monkeypatch.setattr(datasets, "_MNIST_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "_mnist_cache", None)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: SHA-256"):
        datasets.mnist()


def small_split(rng, n, rows=5, cols=4):
    images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def test_mnist_reads_another_directory_raw_or_gzip(tmp_path):
    rng = np.random.default_rng(1)
    train, test = small_split(rng, 7), small_split(rng, 3)
    write(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(train[0])))
    write(tmp_path, "train-labels-idx1-ubyte", idx_bytes(train[1]))
    write(tmp_path, "t10k-images-idx3-ubyte", idx_bytes(test[0]))
    write(tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(test[1])))
    (x_train, y_train), (x_test, y_test) = datasets.mnist(tmp_path)
    for got, want in zip((x_train, y_train, x_test, y_test), (*train, *test)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.uint8


def test_directory_with_mismatched_or_missing_files(tmp_path):
    rng = np.random.default_rng(2)
    train, test = small_split(rng, 7), small_split(rng, 3)
    write(tmp_path, "train-images-idx3-ubyte", idx_bytes(train[0]))
    write(tmp_path, "train-labels-idx1-ubyte", idx_bytes(train[1][:6]))
    write(tmp_path, "t10k-images-idx3-ubyte", idx_bytes(test[0]))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        datasets.mnist(tmp_path)
    write(tmp_path, "t10k-labels-idx1-ubyte", idx_bytes(test[1]))
    with pytest.raises(
        ValueError, match=r"train-labels-idx1-ubyte has shape \(6,\), expected \(7,\)"
    ):
        datasets.mnist(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        datasets.mnist(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(TypeError, match="directory"):
        datasets.mnist(3)


# ------------------------------------------------------------------------------------------
# load_idx on valid files


@pytest.mark.parametrize("code", sorted(TYPE_CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_every_type_code(tmp_path, code, compress):
    rng = np.random.default_rng(code)
    dtype = np.dtype(TYPE_CODES[code]).newbyteorder("=")
    for shape in [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2)]:
        if dtype.kind == "f":
            info = np.finfo(dtype)
            array = rng.standard_normal(shape).astype(dtype)
            array.flat[0], array.flat[-1] = info.max, info.tiny
        else:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
            array.flat[0], array.flat[-1] = info.min, info.max
        payload = idx_bytes(array)
        # The reader decides by content, not by name: no .gz suffix on the compressed files.
        path = write(
            tmp_path, f"data-{len(shape)}.idx", gzip.compress(payload) if compress else payload
        )
        got = datasets.load_idx(path)
        assert got.dtype == dtype and got.dtype.isnative
        assert got.shape == shape and got.flags.c_contiguous and got.flags.writeable
        np.testing.assert_array_equal(got, array)


def test_load_idx_accepts_a_multi_member_gzip(tmp_path):
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    payload = idx_bytes(array)
    path = write(tmp_path, "multi.gz", gzip.compress(payload[:30]) + gzip.compress(payload[30:]))
    np.testing.assert_array_equal(datasets.load_idx(path), array)


# ------------------------------------------------------------------------------------------
# load_idx on invalid files: each mistake gets its own message


def valid_payload():
    return idx_bytes(np.arange(60, dtype=np.int16).reshape(3, 4, 5))


def header(code, *dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "truncated IDX header"),
        (b"\x00\x00\x08", "truncated IDX header"),
        (b"\x01\x00\x08\x01" + bytes(8), "not an IDX file"),
        (b"\x00\x02\x08\x01" + bytes(8), "not an IDX file"),
        (b"PK\x03\x04" + bytes(8), "not an IDX file"),
        (b"\x00\x00\x0a\x01" + struct.pack(">I", 1) + b"x", "unknown IDX type code 0x0A"),
        (b"\x00\x00\x08\x00", "declares 0 dimensions"),
        (b"\x00\x00\x08\x05" + struct.pack(">5I", 1, 1, 1, 1, 1) + b"x", "declares 5 dimensions"),
        (b"\x00\x00\x08\x03" + struct.pack(">2I", 3, 4), "truncated IDX header"),
        (header(0x08, 3, 0, 5), "dimension 1 is 0"),
        (header(0x08, 2**31, 2), "above the limit"),
        (header(0x0E, 2**32 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 1), "above the limit"),
        (header(0x08, 2**16, 2**15) + bytes(10), "bytes"),
        (valid_payload()[:-1], "truncated"),
        (valid_payload()[:17], "truncated"),
        (valid_payload() + b"\x00", "trailing bytes"),
        (valid_payload() + bytes(1000), "trailing bytes"),
    ],
)
def test_load_idx_rejects(tmp_path, payload, message, compress):
    path = write(tmp_path, "bad", gzip.compress(payload) if compress else payload)
    with pytest.raises(ValueError, match=message) as info:
        datasets.load_idx(path)
    assert path in str(info.value)


def test_load_idx_rejects_corrupt_gzip(tmp_path):
    good = gzip.compress(valid_payload())
    cases = {
        "cut": good[:-5],  # stream ends before its trailer
        "crc": good[:-8] + bytes([good[-8] ^ 1]) + good[-7:],
        "deflate": good[:10] + b"\xff" * 8 + good[18:],
        "garbage": good + b"junk",
        "magic-only": b"\x1f\x8b",
    }
    for name, payload in cases.items():
        path = write(tmp_path, name, payload)
        with pytest.raises(ValueError, match="bad|corrupt|truncated|trailing") as info:
            datasets.load_idx(path)
        assert path in str(info.value), name


def test_gzip_claiming_more_than_it_can_hold_is_refused_before_reading(tmp_path, traced):
    # 1 GiB of zeros would compress to about 1 MB; a 60-byte file cannot hold it.
    path = write(tmp_path, "bomb.gz", gzip.compress(header(0x08, 2**15, 2**15) + bytes(100)))
    tracemalloc.reset_peak()
    with pytest.raises(ValueError, match="more than a .*-byte gzip file can hold"):
        datasets.load_idx(path)
    assert tracemalloc.get_traced_memory()[1] < ALLOC_LIMIT


def test_max_bytes_and_argument_types(tmp_path):
    path = write(tmp_path, "ok", valid_payload())
    assert datasets.load_idx(path, max_bytes=120).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="above the limit of 119 bytes"):
        datasets.load_idx(path, max_bytes=119)
    with pytest.raises(ValueError, match="max_bytes"):
        datasets.load_idx(path, max_bytes=0)
    with pytest.raises(TypeError, match="path"):
        datasets.load_idx(None)
    with pytest.raises(FileNotFoundError):
        datasets.load_idx(tmp_path / "missing")


# ------------------------------------------------------------------------------------------
# fuzzing load_idx: every mutation loads the right array or raises ValueError, within bounded memory


def test_allocation_meter_sees_a_real_allocation(tmp_path, traced):
    # Control: the meter used below does see load_idx's allocations.
    path = write(tmp_path, "big", idx_bytes(np.zeros(ALLOC_LIMIT, np.uint8)))
    tracemalloc.reset_peak()
    datasets.load_idx(path)
    assert tracemalloc.get_traced_memory()[1] >= ALLOC_LIMIT


def mutations(payload):
    yield from (payload[:n] for n in range(len(payload)))  # truncation at every length
    for i in range(len(payload)):  # every single-bit flip
        for bit in range(8):
            yield payload[:i] + bytes([payload[i] ^ (1 << bit)]) + payload[i + 1 :]
    for i in range(min(len(payload), 24)):  # every byte of the header (and beyond) set to extremes
        for value in (0x00, 0x01, 0x7F, 0x80, 0xFF):
            yield payload[:i] + bytes([value]) + payload[i + 1 :]
    for tail in (b"\x00", b"\xff" * 3, payload):  # trailing bytes
        yield payload + tail


def absurd_headers():
    for code in TYPE_CODES:
        for dims in [(2**31,), (2**31, 28, 28), (2**32 - 1,) * 4, (1, 2**31), (60000, 28, 2**16)]:
            yield header(code, *dims) + bytes(64)


@pytest.mark.parametrize("compress", [False, True])
def test_fuzz_mutations(tmp_path, traced, compress):
    base = valid_payload()
    payload = gzip.compress(base, mtime=0) if compress else base
    cases = list(mutations(payload))
    cases += [gzip.compress(h) if compress else h for h in absurd_headers()]
    if compress:  # mutate the decompressed bytes too, then recompress
        cases += [gzip.compress(m) for m in mutations(base)]
    path = str(tmp_path / "fuzz")
    loaded = 0
    for case in cases:
        write(tmp_path, "fuzz", case)
        check_against_reference(path, case)
        loaded += reference_decode(case) is not None
    # The loop exercised both outcomes: some mutants (data-byte flips) are valid files.
    assert 0 < loaded < len(cases)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from(sorted(TYPE_CODES) + [0x00, 0x0A, 0xFF]),
    dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), min_size=0, max_size=5),
    body=st.binary(max_size=300),
    compress=st.booleans(),
    magic=st.sampled_from([b"\x00\x00", b"\x00\x01", b"\x08\x00"]),
)
def test_fuzz_hypothesis_headers(code, dims, body, compress, magic):
    payload = magic + bytes([code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body
    _fuzz_one(gzip.compress(payload) if compress else payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_hypothesis_arbitrary_bytes(payload):
    _fuzz_one(payload)


def _fuzz_one(payload):
    with tempfile.TemporaryDirectory() as directory:
        path = write(directory, "case", payload)
        tracemalloc.start()
        try:
            check_against_reference(path, payload)
        finally:
            tracemalloc.stop()


# ------------------------------------------------------------------------------------------
# train_val_split


def test_split_partitions_every_sample_once():
    x = np.arange(103)
    y = np.arange(103) * 10
    (x_train, y_train), (x_val, y_val) = datasets.train_val_split(x, y, 0.2, seed=0)
    assert len(x_val) == round(103 * 0.2) and len(x_train) == 103 - len(x_val)
    np.testing.assert_array_equal(np.sort(np.concatenate([x_train, x_val])), x)
    np.testing.assert_array_equal(y_train, x_train * 10)  # pairs stay together
    np.testing.assert_array_equal(y_val, x_val * 10)


def test_split_is_deterministic_per_seed():
    x = np.arange(200).reshape(100, 2)
    y = np.arange(100)
    first = datasets.train_val_split(x, y, 0.3, seed=7)
    again = datasets.train_val_split(x, y, 0.3, seed=7)
    other = datasets.train_val_split(x, y, 0.3, seed=8)
    from_generator = datasets.train_val_split(x, y, 0.3, seed=np.random.default_rng(7))
    for a, b, c in zip(first[1], again[1], from_generator[1]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(first[1][1], other[1][1])
    assert first[0][0].flags.c_contiguous


@pytest.mark.parametrize(
    "args, error",
    [
        ((np.zeros(10), np.zeros(9), 0.1, 0), ValueError),
        ((np.zeros(10), np.zeros(10), 0.0, 0), ValueError),
        ((np.zeros(10), np.zeros(10), 1.0, 0), ValueError),
        ((np.zeros(10), np.zeros(10), -0.5, 0), ValueError),
        ((np.zeros(10), np.zeros(10), float("nan"), 0), ValueError),
        ((np.zeros(10), np.zeros(10), 0.01, 0), ValueError),  # rounds to 0 validation samples
        ((np.zeros(10), np.zeros(10), 0.99, 0), ValueError),  # rounds to 0 training samples
        ((np.zeros(10), np.zeros(10), "0.1", 0), TypeError),
        ((np.zeros(10), np.zeros(10), True, 0), TypeError),
        ((np.zeros(10), np.zeros(10), 0.1, None), TypeError),
        ((np.zeros(10), np.zeros(10), 0.1, 1.5), TypeError),
        ((np.zeros(10), np.zeros(10), 0.1, -1), ValueError),
        ((np.float64(1.0), np.zeros(10), 0.1, 0), ValueError),
    ],
)
def test_split_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        datasets.train_val_split(*args)


# ------------------------------------------------------------------------------------------
# batches


@pytest.mark.parametrize("n, batch_size", [(10, 3), (9, 3), (1, 5), (128, 128), (7, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_all_indices_and_keep_the_last_partial_batch(n, batch_size, shuffle):
    parts = list(datasets.batches(n, batch_size, shuffle=shuffle, rng=np.random.default_rng(0)))
    sizes = [len(p) for p in parts]
    assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    everything = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))
    if not shuffle:
        np.testing.assert_array_equal(everything, np.arange(n))
    assert all(np.issubdtype(p.dtype, np.integer) for p in parts)


def test_batches_reshuffle_each_epoch_reproducibly():
    def epochs(seed):
        rng = np.random.default_rng(seed)
        return [
            np.concatenate(list(datasets.batches(50, 8, shuffle=True, rng=rng))) for _ in range(3)
        ]

    first, again = epochs(3), epochs(3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # a new order every epoch
    assert not np.array_equal(first[0], np.arange(50))
    np.testing.assert_array_equal(
        np.concatenate(list(datasets.batches(50, 8, rng=5))),
        np.concatenate(list(datasets.batches(50, 8, rng=5))),
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(n=0, batch_size=4, rng=0), ValueError),
        (dict(n=10, batch_size=0, rng=0), ValueError),
        (dict(n=10, batch_size=-3, rng=0), ValueError),
        (dict(n=10, batch_size=2.0, rng=0), TypeError),
        (dict(n=10.0, batch_size=2, rng=0), TypeError),
        (dict(n=10, batch_size=True, rng=0), TypeError),
        (dict(n=10, batch_size=2, shuffle=True, rng=None), ValueError),
        (dict(n=10, batch_size=2, shuffle=True, rng="seed"), TypeError),
    ],
)
def test_batches_check_arguments_at_the_call(kwargs, error):
    with pytest.raises(error):
        datasets.batches(**kwargs)  # not iterated: the error must come before any batch


# ------------------------------------------------------------------------------------------
# to_float


def test_to_float_scales_uint8_images():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)[:, ::-1]  # not contiguous
    out = datasets.to_float(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == x.shape
    np.testing.assert_array_equal(out, x.astype(np.float32) / np.float32(255))
    assert out.min() == 0.0 and out.max() == 1.0


def test_to_float_passes_floats_through_as_float32():
    x = np.linspace(-3, 3, 24).reshape(4, 6).T  # float64, Fortran order
    out = datasets.to_float(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x.astype(np.float32))
    same = np.ones((2, 3), np.float32)
    assert datasets.to_float(same) is same  # already what is wanted: no copy


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_to_float_rejects_non_finite(bad):
    x = np.zeros(5)
    x[2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        datasets.to_float(x)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.bool_])
def test_to_float_rejects_other_dtypes(dtype):
    with pytest.raises(TypeError, match="uint8 images or floating point"):
        datasets.to_float(np.zeros(3, dtype))
