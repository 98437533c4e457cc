"""Saving and loading models: identical predictions, atomic writes, and ValueError for any
truncated, tampered or foreign file."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import nn


def cnn(dtype=np.float32):
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
        dtype=dtype,
    )


@pytest.fixture
def saved(tmp_path):
    fastnn.seed(0)
    model = cnn()
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path


def test_round_trip_gives_identical_predictions(saved):
    model, path = saved
    loaded = fastnn.load(path)
    x = np.random.default_rng(0).integers(0, 256, (32, 10, 10), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.config() == model.config() and loaded.backend is model.backend
    on_numpy = fastnn.load(path, backend="numpy")
    assert on_numpy.backend.name == "numpy"
    np.testing.assert_allclose(on_numpy.predict_proba(x), model.predict_proba(x), rtol=1e-5)
    assert repr(loaded) == repr(model) and loaded.input_shape == (1, 10, 10)
    for name, value in model.state_dict().items():
        loaded_value = loaded.state_dict()[name]
        assert loaded_value.dtype == value.dtype and np.array_equal(loaded_value, value)


def test_float64_round_trip(tmp_path):
    fastnn.seed(1)
    model = nn.Sequential(nn.Linear(3, 2), dtype=np.float64, backend="numpy")
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load(tmp_path / "m.npz")
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded[0].weight, model[0].weight)


def test_save_is_atomic_and_leaves_no_temp_files(saved, tmp_path, monkeypatch):
    model, path = saved
    good = path.read_bytes()
    fastnn.seed(9)
    other = cnn()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    assert path.read_bytes() == good  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def rewrite(path, transform):
    """Rebuild the .npz with each member passed through transform(name, bytes)."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            data = transform(name, data)
            if data is not None:
                z.writestr(name, data)


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def header_of(path):
    with np.load(path) as npz:
        return json.loads(npz["__fastnn__"].tobytes())


def with_header(path, edit):
    header = header_of(path)
    edit(header)
    blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
    rewrite(path, lambda n, d: npy_bytes(blob) if n == "__fastnn__.npy" else d)


def flip_weight(path):
    def t(name, data):
        if name == "3.weight.npy":
            a = np.load(io.BytesIO(data))
            a.flat[0] += 1.0
            return npy_bytes(a)
        return data

    rewrite(path, t)


CORRUPTIONS = {
    "truncated_half": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "truncated_tail": lambda p: p.write_bytes(p.read_bytes()[:-10]),
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("not a model\n"),
    "bit_flip": lambda p: p.write_bytes(
        bytes(
            b ^ 0x40 if i == len(p.read_bytes()) // 2 else b for i, b in enumerate(p.read_bytes())
        )
    ),
    "plain_npy": lambda p: p.write_bytes(npy_bytes(np.zeros(3))),
    "foreign_npz": lambda p: (p.unlink(), np.savez(open(p, "wb"), a=np.zeros(3))),
    "pickled_member": lambda p: rewrite(
        p, lambda n, d: npy_bytes(np.array([{}], object)) if n == "0.bias.npy" else d
    ),
    "tampered_weight": flip_weight,
    "missing_array": lambda p: rewrite(p, lambda n, d: None if n == "7.bias.npy" else d),
    "extra_array": lambda p: rewrite(p, lambda n, d: d) or _add_member(p, "extra.npy"),
    "wrong_shape": lambda p: rewrite(
        p, lambda n, d: npy_bytes(np.zeros((5,), np.float32)) if n == "0.bias.npy" else d
    ),
    "wrong_dtype": lambda p: rewrite(
        p, lambda n, d: npy_bytes(np.zeros(4, np.float64)) if n == "0.bias.npy" else d
    ),
    "header_garbage": lambda p: rewrite(
        p, lambda n, d: npy_bytes(np.frombuffer(b"{nope", np.uint8)) if n == "__fastnn__.npy" else d
    ),
    "header_foreign_format": lambda p: with_header(p, lambda h: h.update(format="other")),
    "header_future_version": lambda p: with_header(p, lambda h: h.update(format_version=99)),
    "unknown_layer": lambda p: with_header(
        p, lambda h: h["architecture"]["layers"][2].update(type="Evil")
    ),
    "layer_bad_value": lambda p: with_header(
        p, lambda h: h["architecture"]["layers"][0].update(out_channels="4")
    ),
    "huge_layer": lambda p: with_header(
        p, lambda h: h["architecture"]["layers"][7].update(in_features=2**40)
    ),
    "architecture_mismatch": lambda p: with_header(
        p, lambda h: h["architecture"]["layers"][9].update(out_features=11)
    ),
    "dtype_mismatch": lambda p: with_header(p, lambda h: h["architecture"].update(dtype="float64")),
    "bad_dtype": lambda p: with_header(p, lambda h: h["architecture"].update(dtype="int8")),
    "digest_mismatch": lambda p: with_header(
        p, lambda h: h["params"]["0.weight"].update(sha256="0" * 64)
    ),
}


def _add_member(path, name):
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(name, npy_bytes(np.zeros(2)))


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupted_files_raise_value_error(saved, corruption):
    _, path = saved
    CORRUPTIONS[corruption](path)
    with pytest.raises(ValueError, match="not a valid fastnn model"):
        fastnn.load(path)


def test_missing_file_and_bad_path_type(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastnn.load(tmp_path / "absent.npz")
    with pytest.raises(TypeError):
        fastnn.load(3)


def test_every_truncation_raises_value_error(saved):
    _, path = saved
    data = path.read_bytes()
    for size in range(0, len(data), max(1, len(data) // 97)):
        path.write_bytes(data[:size])
        with pytest.raises(ValueError):
            fastnn.load(path)
