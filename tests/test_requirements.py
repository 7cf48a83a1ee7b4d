"""`make run` installs requirements.txt only: everything the service imports must come from it (directly or as
a dependency), and the test, lint and type tools stay in requirements-dev.txt."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.service import REPO

SERVICE_PACKAGES = ("wave_site", "requests_app", "credentials", "builds", "registry")
CHECK_TOOLS = {"pytest", "pytest-django", "ruff", "mypy", "django-stubs", "djangorestframework-stubs", "celery-types",
               "types-pyyaml", "schemathesis", "moto", "hypothesis", "selenium", "bcrypt", "pytest-xdist"}  # fmt: skip


def requirements(name: str) -> dict[str, Requirement]:
    found = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r "):
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def installed_closure(roots: dict[str, Requirement]) -> set[str]:
    """The distributions `roots` pull in, with their extras, as installed here."""
    seen: set[str] = set()
    pending = [(name, set(requirement.extras)) for name, requirement in roots.items()]
    while pending:
        name, extras = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras or {""}):
                pending.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return seen


def imported_distributions() -> set[str]:
    """Third-party distributions imported by the service's code (tests and migrations aside)."""
    providers = metadata.packages_distributions()
    modules = set()
    for package in SERVICE_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - set(SERVICE_PACKAGES) - {"__future__"}
    return {canonicalize_name(providers[module][0]) for module in third_party}


def test_every_pin_is_exact() -> None:
    for name in ("requirements.txt", "requirements-dev.txt"):
        for requirement in requirements(name).values():
            assert re.fullmatch(r"==[\w.]+", str(requirement.specifier)), f"{name}: {requirement}"


def test_runtime_requirements_hold_no_check_tools_and_dev_adds_them() -> None:
    runtime, dev = requirements("requirements.txt"), requirements("requirements-dev.txt")
    assert not CHECK_TOOLS & set(runtime)
    assert set(dev) >= CHECK_TOOLS
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text().splitlines()
    assert not set(runtime) & set(dev)


def test_service_imports_only_what_requirements_txt_installs() -> None:
    missing = imported_distributions() - installed_closure(requirements("requirements.txt"))
    assert missing == set()


def test_make_run_installs_runtime_requirements_only() -> None:
    makefile = (REPO / "Makefile").read_text()
    run_prerequisites = re.search(r"^run: (.*)$", makefile, re.MULTILINE)
    assert run_prerequisites is not None
    assert run_prerequisites.group(1).split() == ["tools", "$(RUN_STAMP)"]
    assert re.search(
        r"^\$\(RUN_STAMP\): requirements.txt \| \$\(PY\)\n\t\$\(PIP\) -r requirements.txt$", makefile, re.M
    )
    assert re.search(r"^test: tools test-tools services lint check pytest$", makefile, re.MULTILINE)
    assert re.search(r"^TEST_TOOLS := chromium chromium-driver$", makefile, re.MULTILINE)
    assert Path(REPO / "Dockerfile").read_text().count("pip install --no-cache-dir -r requirements.txt") == 1
