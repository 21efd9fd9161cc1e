"""environment.yml and pyproject.toml must agree: runtime deps live once, in pyproject."""

import re
import tomllib
from pathlib import Path

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


def test_notebook_tools_in_environment_are_declared_in_nb_extra():
    conda = set(conda_packages()) - {"python", "pip"}
    assert conda == {"jupyterlab", "papermill", "nbval", "ipywidgets"}
    assert conda <= names(PYPROJECT["project"]["optional-dependencies"]["nb"])


def test_no_runtime_dependency_is_declared_twice():
    runtime = names(PYPROJECT["project"]["dependencies"])
    assert not runtime & set(conda_packages())
