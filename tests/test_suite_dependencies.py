"""The suite's rule for its optional packages (torch, the reference; onnx, onnxruntime,
aeon, matplotlib, tqdm): a test that needs a missing one skips, alone, and its file's
other tests still run; under CI (the ``CI`` variable set) it fails instead, naming the
package and the install command, so a CI run cannot pass having checked nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import INSTALL, require

TESTS = Path(__file__).parent

# run pytest with these packages unimportable, as if not installed: a finder refuses them
# (setting sys.modules[name] = None would also hide them, but leaves a None that some
# libraries, e.g. SciPy's array API layer, trip over)
HIDING_RUNNER = textwrap.dedent("""
    import importlib.abc, sys
    import pytest

    HIDDEN = {"torch", "onnx", "onnxruntime", "aeon"}

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    sys.exit(pytest.main(["-p", "no:cacheprovider", "-q", "-rA", *sys.argv[1:]]))
""")

SAMPLE = textwrap.dedent("""
    from helpers import require

    def test_needs_torch(torch):
        assert torch.__name__ == "torch"

    def test_needs_onnx(onnx):
        pass

    def test_needs_onnxruntime(ort):
        pass

    def test_needs_aeon():
        require("aeon")

    def test_needs_nothing():
        assert 1 + 1 == 2
""")


def _run_hidden(tmp_path, monkeypatch, ci: str | None):
    """The real conftest.py and helpers.py beside SAMPLE, run with the packages hidden."""
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return subprocess.run(
        [sys.executable, "-c", HIDING_RUNNER, "test_sample.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_package_skips_only_its_tests(tmp_path, monkeypatch):
    done = _run_hidden(tmp_path, monkeypatch, ci=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("1 passed, 4 skipped"), done.stdout
    for package in ("torch", "onnx", "onnxruntime", "aeon"):
        assert f"{package} is not installed: {INSTALL}" in done.stdout, package


def test_missing_package_fails_under_ci(tmp_path, monkeypatch):
    done = _run_hidden(tmp_path, monkeypatch, ci="true")
    assert done.returncode == 1, done.stdout + done.stderr
    # a fixture's failure is an error at setup; require() in a test's body, a failure
    assert done.stdout.splitlines()[-1].startswith("1 failed, 1 passed, 3 errors"), done.stdout
    for package in ("torch", "onnx", "onnxruntime", "aeon"):
        message = (
            f"{package} is not installed, and CI is set, so the tests that need it "
            f"fail instead of skipping: {INSTALL}"
        )
        assert message in done.stdout, package
    assert "PASSED test_sample.py::test_needs_nothing" in done.stdout


@pytest.mark.parametrize(
    "ci,outcome",
    [
        (None, pytest.skip.Exception),
        ("", pytest.skip.Exception),
        ("0", pytest.skip.Exception),
        ("false", pytest.skip.Exception),
        ("true", pytest.fail.Exception),
        ("1", pytest.fail.Exception),
    ],
)
def test_require_skips_or_fails_by_ci(monkeypatch, ci, outcome):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"rnnkit_no_such_package is not installed.*pip install"):
        require("rnnkit_no_such_package")


def test_require_returns_the_module_and_lets_a_broken_one_fail(tmp_path, monkeypatch):
    assert require("json") is sys.modules["json"]
    (tmp_path / "rnnkit_broken_package.py").write_text("import rnnkit_its_missing_part\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(ModuleNotFoundError, match="rnnkit_its_missing_part"):
        require("rnnkit_broken_package")  # installed but broken: an error, not a skip
    monkeypatch.delenv("CI")
    with pytest.raises(ModuleNotFoundError, match="rnnkit_its_missing_part"):
        require("rnnkit_broken_package")
