"""Install hints work from where the user is: "fastnn" on PyPI is an unrelated project, so no
message may say `pip install fastnn...`; this project is published as fastnn-mnist."""

import re
from pathlib import Path

import pytest

from fastnn import plots
from fastnn.backends import cuda

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "fastnn-mnist"

pytestmark = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").exists(), reason="not run from a fastnn checkout"
)


def sources():
    for folder in ("fastnn", "examples", "benchmarks"):
        yield from (ROOT / folder).rglob("*.py")
    yield ROOT / "README.md"
    yield from (ROOT / "docs").rglob("*.md")
    yield ROOT / "benchmarks" / "README.md"


def test_no_hint_installs_the_other_project():
    # `pip install fastnn`, `pip install fastnn[plot]`, `pip install "fastnn[cuda12]"`, ...
    wrong = re.compile(r"""pip install\s+(-\S+\s+)*["']?fastnn(\[|["'\s)`]|$)""", re.M)
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0)!r}"
        for path in sources()
        if path.exists()
        for m in wrong.finditer(path.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_the_distribution_name_is_one_nobody_else_has_and_the_readme_says_it():
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == DISTRIBUTION
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert DISTRIBUTION in readme


def test_hints_name_plain_dependencies_or_the_checkout_extras():
    assert "pip install matplotlib" in plots.INSTALL_HINT
    assert 'pip install ".[plot]"' in plots.INSTALL_HINT
    assert 'pip install "cupy-cuda12x[ctk]"' in cuda._PIP_HINT
    assert 'pip install ".[cuda12]"' in cuda._PIP_HINT
    with open(ROOT / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    # the plain packages a hint names are what the extras install
    assert any(dep.startswith("matplotlib") for dep in extras["plot"])
    assert any(dep.startswith("cupy-cuda12x[ctk]") for dep in extras["cuda12"])
    assert any(dep.startswith("cupy-cuda13x[ctk]") for dep in extras["cuda13"])
