"""Files fastnn writes atomically (model.save, checkpoints, the examples' --json) get the
permissions open(path, "w") would give them, not mkstemp's owner-only 0o600."""

import os
import stat
import sys

import numpy as np
import pytest

from fastnn import fileformat, nn

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_a_new_file_follows_the_umask(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain"
    with open(plain, "wb"):
        pass
    fileformat.atomic_write(tmp_path / "atomic", lambda f: f.write(b"data"))
    assert mode(tmp_path / "atomic") == mode(plain) == 0o666 & ~mask
    assert (tmp_path / "atomic").read_bytes() == b"data"


def test_an_existing_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "kept"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    fileformat.atomic_write(path, lambda f: f.write(b"new"))
    assert mode(path) == 0o640 and path.read_bytes() == b"new"


def test_model_save_is_readable_by_others_under_umask_022(tmp_path, umask):
    umask(0o022)
    model = nn.Sequential(nn.Linear(4, 3))
    model.save(tmp_path / "m.npz")
    assert mode(tmp_path / "m.npz") == 0o644
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert leftovers == []


def test_a_failed_write_leaves_no_temporary_and_the_old_file(tmp_path):
    path = tmp_path / "target"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fileformat.atomic_write(path, fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["target"]


def test_umask_is_read_without_changing_it(umask):
    umask(0o027)
    assert fileformat._umask() == 0o027
    assert os.umask(0o027) == 0o027  # still what the test set
    np.testing.assert_equal(fileformat._umask(), 0o027)
