"""environment.yml and pyproject.toml must agree: runtime deps live once, in pyproject."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())


def names(requirements):
    return {Requirement(r).name.lower() for r in requirements}


def conda_packages():
    out = {}
    for dep in ENV["dependencies"]:
        if isinstance(dep, str):
            name, _, version = dep.partition("=")
            out[name.lower()] = version
    return out


def pip_lines():
    return next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict))


def test_torch_is_pinned_exactly():
    torch_reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] if Requirement(r).name == "torch"]
    assert [str(r.specifier) for r in torch_reqs] == ["==2.13.0"]


def test_environment_installs_this_package_with_existing_extras():
    lines = pip_lines()
    assert len(lines) == 1
    match = re.fullmatch(r"-e \.\[([\w,]+)\]", lines[0])
    assert match, lines[0]
    extras = set(match.group(1).split(","))
    assert extras == {"nb", "metrics"}
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_environment_python_satisfies_requires_python():
    version = conda_packages()["python"]
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{version}.0")


# conda-only build tools: the metrics extra's medspacy-simstring is a C++ sdist
BUILD_TOOLS = {"cxx-compiler"}


def test_notebook_tools_in_environment_are_declared_in_nb_extra():
    conda = set(conda_packages()) - {"python", "pip"} - BUILD_TOOLS
    assert conda == {"jupyterlab", "papermill", "nbval", "ipywidgets"}
    assert conda <= names(PYPROJECT["project"]["optional-dependencies"]["nb"])


def test_environment_can_build_the_metrics_extra():
    assert BUILD_TOOLS <= set(conda_packages())


def test_no_runtime_dependency_is_declared_twice():
    runtime = names(PYPROJECT["project"]["dependencies"])
    metrics = names(PYPROJECT["project"]["optional-dependencies"]["metrics"])
    assert not (runtime | metrics) & set(conda_packages())
    assert not runtime & metrics


# ---------------------------------------------------------------- the metrics extra
def metrics_requirements():
    return [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["metrics"]]


def pinned(requirement):
    (spec,) = requirement.specifier
    assert spec.operator == "==", requirement
    return spec.version


def test_metrics_extra_pins_the_backends_report_metrics_names():
    from medkit.eval import report_metrics as rm

    reqs = {r.name.lower(): r for r in metrics_requirements()}
    for _module, _entry, package in rm.BACKENDS.values():
        dist, _, version = package.partition("==")
        assert pinned(reqs[dist.lower()]) == version, package
    assert {p.partition("==")[0].lower() for *_, p in rm.BACKENDS.values()} <= set(reqs)


def test_metrics_extra_pins_ratescores_undeclared_spacy_stack_on_numpy2():
    # RaTEScore imports medspacy without declaring it; spaCy < 3.8 (thinc < 8.3) has only
    # numpy-1 wheels, and the core install requires numpy >= 2.
    from packaging.version import Version

    reqs = {}
    for r in metrics_requirements():
        reqs.setdefault(r.name.lower(), []).append(r)
    assert Version(pinned(reqs["spacy"][0])) >= Version("3.8")
    assert pinned(reqs["medspacy"][0])
    for python in ("3.11", "3.12"):  # requires-python: one exact PyRuSH pin each
        env = {"python_version": python, "python_full_version": f"{python}.0"}
        active = [r for r in reqs["pyrush"] if r.marker is None or r.marker.evaluate(env)]
        assert len(active) == 1 and pinned(active[0]), python
    core = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    numpy = next(r for r in core if r.name == "numpy")
    assert not numpy.specifier.contains("1.26.4")


def test_make_env_installs_the_extras_environment_yml_installs():
    # the test environment has the metrics extra, so tests/test_metric_backends.py never skips
    install = re.findall(r"pip install -q -e '\.\[([\w,]+)\]'", (ROOT / "Makefile").read_text())
    assert len(install) == 1
    env_extras = set(re.fullmatch(r"-e \.\[([\w,]+)\]", pip_lines()[0]).group(1).split(","))
    assert env_extras <= set(install[0].split(",")) == {"dev", "nb", "metrics"}


# ---------------------------------------------------------------- hub access in the Makefile
def make_sees_hf_hub_offline(target, *args, env_value=None):
    """HF_HUB_OFFLINE as the recipe of `make TARGET` sees it (the recipe's python replaced by echo)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "CONDA_PREFIX", "MAKEFLAGS", "MFLAGS", "PROFILE")}
    if env_value is not None:
        env["HF_HUB_OFFLINE"] = env_value
    done = subprocess.run(["make", "-s", "--no-print-directory", target, *args, "ENV_READY=",
                           'PY=echo "HF_HUB_OFFLINE=$${HF_HUB_OFFLINE-unset}"; true'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("HF_HUB_OFFLINE=")]
    return line.partition("=")[2]


def test_tiny_profile_and_tests_are_offline_paper_may_fetch_weights():
    assert make_sees_hf_hub_offline("reproduce") == "1"  # PROFILE=tiny is the default
    assert make_sees_hf_hub_offline("reproduce", "PROFILE=tiny") == "1"
    assert make_sees_hf_hub_offline("reproduce", "PROFILE=paper") == "unset"
    assert make_sees_hf_hub_offline("test") == "1"
    assert make_sees_hf_hub_offline("test", "PROFILE=paper") == "1"
    # a value from the caller's environment wins (e.g. .ci/run's export)
    assert make_sees_hf_hub_offline("reproduce", "PROFILE=paper", env_value="1") == "1"
    assert make_sees_hf_hub_offline("test", env_value="0") == "0"
