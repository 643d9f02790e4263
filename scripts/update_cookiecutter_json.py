"""Write cookiecutter.json from copier.yml: the same questions, names, defaults and order.

copier.yml is the one declaration; cookiecutter.json is derived from it and checked in, because
`cookiecutter <repository>` reads it from the repository. tests/test_cookiecutter.py fails when it
is not what this script writes. Run after changing a question: python scripts/update_cookiecutter_json.py
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "cookiecutter.json"
code = runpy.run_path(str(ROOT / "hooks" / "copier_context.py"))


def expression(default: str) -> str:
    """The Jinja expression inside "{{ ... }}"."""
    inner = default.strip()
    assert inner.startswith("{{") and inner.endswith("}}"), default
    return inner[2:-2].strip()


def entry(name: str, spec: dict[str, Any]) -> tuple[Any, Any]:
    """(cookiecutter.json value, its __prompts__ entry) of one asked question."""
    help_text = " ".join(str(spec.get("help", name)).split())
    default = spec.get("default")
    listed = code["choices"](spec)
    if spec.get("multiselect"):
        # No multiselect in cookiecutter: one comma-separated string, the default joined.
        names = ", ".join(str(value) for _, value, _ in listed)
        default = "{{ (" + expression(default) + ") | join(',') }}"
        return default, f"{help_text}; comma-separated, from: {names}"
    if listed and "{{" not in str(default):
        # A menu, the default first (cookiecutter's rule); labels as copier shows them.
        values = [value for _, value, _ in listed]
        values.remove(default)
        labels = {str(value): label for label, value, _ in listed}
        return [default, *values], {"__prompt__": help_text, **labels}
    if listed:
        # The default depends on earlier answers, which a menu cannot say: a string, checked
        # against the choices before anything is written (hooks/pre_gen_project.py).
        names = ", ".join(str(value) for _, value, _ in listed)
        return default, f"{help_text} (one of: {names})"
    return default, help_text


def build() -> str:
    config = code["load_config"](ROOT)
    data: dict[str, Any] = {}
    prompts: dict[str, Any] = {}
    for name, spec in code["questions"](config).items():
        if code["is_computed"](spec):
            continue
        data[name], prompts[name] = entry(name, spec)
    # The generated directory: the distribution name, or "." to add to an existing repository
    # (cookiecutter -f -o <repository>); copier reaches the same tree through _subdirectory.
    # cookiecutter creates it before the hook refuses bad answers (and then removes it): a
    # refused distribution name (empty, "../x") is never used as a path.
    data["__project_dir"] = (
        "{{ '.' if not new_project else '.refused-answers' if copier_errors else distribution_name }}"
    )
    data["__prompts__"] = prompts
    data["_extensions"] = ["local_extensions.CopierContext"]
    data["_new_lines"] = "\n"
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    text = build()
    if "--check" in sys.argv:
        sys.exit(0 if TARGET.read_text() == text else "cookiecutter.json is out of date")
    TARGET.write_text(text)
