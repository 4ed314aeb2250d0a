"""The package is one namespace, `alpr`, and every error it raises on purpose is an AlprError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import alpr
from alpr.core.errors import AlprError

ROOT = Path(__file__).parents[1]


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(alpr.__path__, "alpr.") if not m.name.endswith("__main__")]


def test_every_exception_class_derives_from_alpr_error() -> None:
    strays = []
    for name in _modules():
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException) and not issubclass(cls, AlprError):
                strays.append(f"{name}.{cls_name}")
    assert strays == []


def test_only_alpr_is_importable_from_the_project() -> None:
    """The wheel's top level is `alpr` alone: the folders map under it, nothing else leaks."""
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {p.split(".")[0] for p in conf["packages"]} == {"alpr"}
    assert set(conf["package-dir"].values()) == {"pipeline", "gpu", "schemas", "topologies", "infra"}
    # every package folder on disk is declared, so none is left out of the wheel
    declared = {conf["package-dir"].get(p) or "pipeline/" + "/".join(p.split(".")[1:]) for p in conf["packages"]}
    on_disk = {str(d.parent.relative_to(ROOT)) for d in ROOT.glob("pipeline/**/__init__.py")}
    assert on_disk <= declared | {"pipeline"}


def test_no_broad_except_hides_a_failure() -> None:
    """`except Exception` must log, re-raise or audit: a silent one hides a failure."""
    silent = []
    for path in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("gpu/**/*.py"), *ROOT.glob("schemas/*.py"),
                 *ROOT.glob("topologies/*.py")]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("except Exception") or line.strip() == "except:":
                indent = len(line) - len(line.lstrip())
                body = []
                for nxt in lines[i + 1:]:
                    if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                    body.append(nxt)
                text = "\n".join(body)
                if not any(word in text for word in ("raise", "log.", "log(", "audit", "_log", "logger.")):
                    silent.append(f"{path.relative_to(ROOT)}:{i + 1}")
    assert silent == []


def test_readme_tree_names_every_stage_folder() -> None:
    """The README's layout block lists exactly the subpackages of pipeline/ and the top-level folders."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    named = {line.split()[0].rstrip("/") for line in block.splitlines() if line.startswith("  ") and line.split()
             and line.split()[0].endswith("/")}
    stages = {d.name for d in (ROOT / "pipeline").iterdir() if (d / "__init__.py").is_file()}
    assert named == stages
    tops = {line.split()[0].rstrip("/") for line in block.splitlines() if line and not line.startswith(" ")}
    assert {"pipeline", "topologies", "schemas", "gpu", "infra"} <= tops
