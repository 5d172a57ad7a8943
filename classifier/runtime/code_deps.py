"""The project's own source files that running a module executes, found by reading its imports
(no import runs). tools/dvc_yaml.py makes each stage's code deps of them, so that editing a file
reruns exactly the stages that run it; train's saved state (classifier/training/resume.py) is refused
when any of train's changes.
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("classifier", "stages", "tools")


def module_file(module: str) -> Path | None:
    """The project file of a dotted module name (a package: its __init__.py), or None outside the project."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1] if path.name != "__init__.py"
                    else path.relative_to(ROOT).parts[:-1])


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every module `path` imports (absolute or relative; `from pkg import mod` gives
    pkg and pkg.mod, whichever of them is a module)."""
    names: set[str] = set()
    package = _package_of(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def code_deps(module: str) -> list[str]:
    """Every project file that running `python -m <module>` executes: its own, the files it imports
    (transitively) and the __init__.py of each package on the way; sorted, its own first."""
    start = module_file(module)
    if start is not None and start.name == "__init__.py":  # `python -m <package>` runs its __main__.py
        start = start.with_name("__main__.py")
    if start is None or not start.is_file():
        raise ValueError(f"{module} is not a project module")
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = imported_modules(path)
        rel = path.relative_to(ROOT)
        names.update(".".join(rel.parts[:k]) for k in range(1, len(rel.parts)))  # the packages it lives in
        todo.extend(f for f in map(module_file, names) if f is not None and f not in seen)
    files = sorted(p.relative_to(ROOT).as_posix() for p in seen - {start})
    return [start.relative_to(ROOT).as_posix(), *files]


def code_digest(module: str) -> str:
    """A hash of every file code_deps(module) lists, names and bytes: another value after any edit."""
    digest = hashlib.sha1()
    for name in code_deps(module):
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
