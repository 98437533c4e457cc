"""fastnn asks OpenMP for a shorter spin at barriers (GOMP_SPINCOUNT=30000, instead of
libgomp's 300000) unless the user chose a wait policy or a spin count; see fastnn/_openmp_env.py."""

import os
import subprocess
import sys

import pytest

_PRINT_ENV = (
    "import os, fastnn; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
)


def _env_after_import(tmp_path, **chosen):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(chosen)
    # run outside the checkout, so that the fastnn under test (installed, or on PYTHONPATH) is
    # imported rather than the unbuilt source tree in the current directory
    out = subprocess.run(
        [sys.executable, "-c", _PRINT_ENV],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_short_spin_when_the_user_chose_nothing(tmp_path):
    assert _env_after_import(tmp_path) == ["None", "30000"]


@pytest.mark.parametrize(
    "chosen, expected",
    [
        ({"OMP_WAIT_POLICY": "active"}, ["active", "None"]),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, ["PASSIVE", "None"]),
        ({"GOMP_SPINCOUNT": "10000"}, ["None", "10000"]),
    ],
)
def test_a_users_choice_is_left_alone(tmp_path, chosen, expected):
    assert _env_after_import(tmp_path, **chosen) == expected
