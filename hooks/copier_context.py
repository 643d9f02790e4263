"""Copier's questionnaire for cookiecutter and cruft: one declaration, copier.yml, for both tools.

cookiecutter knows only the answers it asked (cookiecutter.json, made from copier.yml by
scripts/update_cookiecutter_json.py). This module takes them and does what copier does with its
own: casts each answer to its type, checks choices, runs the question's validator, and computes
the questions that are never asked (`when: false`), all from copier.yml with the same Jinja
expressions. The template files then see the same names and values under both tools.

Loaded by local_extensions.py (the Jinja extension cookiecutter.json names) and by the tests.
Standard library, Jinja2 and PyYAML only: what cookiecutter itself installs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

# The variable cookiecutter renders templates with, holding its answers.
NAMESPACE = "cookiecutter"
# A multiselect question is one comma-separated string in cookiecutter (it has no multiselect).
SEPARATOR = ","


# -- Copier's filters that copier.yml and the template use (copier has them from
# jinja2-ansible-filters; cookiecutter does not install that package). Same semantics.


def regex_search(value: Any, pattern: str) -> str | None:
    match = re.search(pattern, str(value))
    return match.group() if match else None


def regex_replace(value: Any, pattern: str = "", replacement: str = "") -> str:
    return re.sub(pattern, replacement, str(value))


def regex_findall(value: Any, pattern: str) -> list[Any]:
    return re.findall(pattern, str(value))


def to_json(value: Any, *args: Any, **kwargs: Any) -> str:
    return json.dumps(value, *args, **kwargs)


FILTERS = {
    "regex_search": regex_search,
    "regex_replace": regex_replace,
    "regex_findall": regex_findall,
    "to_json": to_json,
}


def cast_to_bool(value: Any) -> bool:
    """copier's reading of a yes/no answer ("false", "no", "0", "" are False)."""
    if isinstance(value, bool):
        return value
    try:
        return bool(float(value))
    except (TypeError, ValueError):
        pass
    if isinstance(value, str):
        lower = value.strip().lower()
        if lower in {"", "n", "no", "f", "false", "off", "~", "null", "none"}:
            return False
        if lower in {"y", "yes", "t", "true", "on"}:
            return True
    return bool(value)


CASTS = {
    "bool": cast_to_bool,
    "str": str,
    "int": int,
    "float": float,
    "json": lambda value: json.loads(value) if isinstance(value, str) else value,
    "yaml": lambda value: yaml.safe_load(value) if isinstance(value, str) else value,
}


# -- copier.yml


class _Loader(yaml.SafeLoader):
    """copier.yml's `!include` (a path relative to the template's root)."""


def load_config(root: Path) -> dict[str, Any]:
    """copier.yml: its documents merged in order, `!include`d files in place."""

    def include(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        path = root / str(loader.construct_scalar(node))  # type: ignore[arg-type]
        return yaml.load(path.read_text(), Loader=_Loader)

    class Loader(_Loader):
        pass

    Loader.add_constructor("!include", include)
    merged: dict[str, Any] = {}
    for document in yaml.load_all((root / "copier.yml").read_text(), Loader=Loader):
        merged.update(document or {})
    return merged


def questions(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec if isinstance(spec, dict) else {"default": spec}
        for name, spec in config.items()
        if not name.startswith("_")
    }


def is_computed(spec: Mapping[str, Any]) -> bool:
    """Never asked: copier's `when: false` (cookiecutter.json does not list it)."""
    return spec.get("when", True) is False


def choices(spec: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(label, value, validator or None) of each choice."""
    given = spec.get("choices") or []
    pairs = list(given.items()) if isinstance(given, dict) else [(c, c) for c in given]
    result = []
    for label, value in pairs:
        if isinstance(value, dict):
            result.append((str(label), value["value"], value.get("validator")))
        else:
            result.append((str(label), value, None))
    return result


class Questionnaire:
    """copier.yml's questions, evaluated as copier evaluates them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = load_config(root)
        self.questions = questions(self.config)
        self.env = SandboxedEnvironment()
        self.env.filters.update(FILTERS)
        self.compiled: dict[str, jinja2.Template] = {}

    def asked(self) -> list[str]:
        return [name for name, spec in self.questions.items() if not is_computed(spec)]

    def render(self, value: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            if value not in self.compiled:
                self.compiled[value] = self.env.from_string(value)
            return self.compiled[value].render(context)
        if isinstance(value, list):
            return [self.render(item, context) for item in value]
        return value

    def cast(self, name: str, spec: Mapping[str, Any], value: Any) -> Any:
        kind = spec.get("type") or "yaml"
        if spec.get("multiselect"):
            if isinstance(value, str):
                stripped = value.strip()
                if stripped.startswith("["):  # the rendered default of copier.yml: a list
                    value = yaml.safe_load(stripped)
                else:
                    value = [part.strip() for part in value.split(SEPARATOR) if part.strip()]
            return [CASTS[kind](item) for item in value]
        return CASTS[kind](value)

    def check_choice(
        self, name: str, spec: Mapping[str, Any], value: Any, context: Mapping[str, Any]
    ) -> Any:
        """copier's choice check and message; a multiselect answer comes in choice order."""
        kind = spec.get("type") or "yaml"
        listed = [
            (CASTS[kind](self.render(v, context)), self.render(check, context) if check else "")
            for _, v, check in choices(spec)
        ]
        valid = [v for v, disabled in listed if not disabled]

        def one(answer: Any) -> None:
            for choice, disabled in listed:
                if answer == choice:
                    if disabled:
                        raise ValueError(f"Invalid choice for '{name}': {disabled}")
                    return
            raise ValueError(f"Invalid choice for '{name}': {answer!r} is not in {valid}")

        if spec.get("multiselect"):
            for answer in value:
                one(answer)
            return [choice for choice, _ in listed if choice in value]
        one(value)
        return value

    def validate(
        self, name: str, spec: Mapping[str, Any], value: Any, context: Mapping[str, Any]
    ) -> None:
        if not spec.get("validator"):
            return
        try:
            message = str(self.render(spec["validator"], {**context, name: value})).strip()
        except Exception as error:  # as copier: a failing validator is a refusal
            message = str(error)
        if message:
            raise ValueError(f"Validation error for question '{name}': {message}")

    def context(self, answers: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """copier's answers (asked and computed) for cookiecutter's `answers`, and the
        refusals, one line each, in question order. With answers still missing (cookiecutter
        renders each default while it asks), the questions up to the first missing one."""
        context: dict[str, Any] = {}
        errors: list[str] = []
        for name, spec in self.questions.items():
            computed = is_computed(spec)
            if not computed and name not in answers:
                break
            try:
                raw = self.render(spec.get("default"), context) if computed else answers[name]
                value = self.cast(name, spec, raw)
                if spec.get("choices"):
                    value = self.check_choice(name, spec, value, context)
                if not computed and cast_to_bool(self.render(spec.get("when", True), context)):
                    self.validate(name, spec, value, context)
            except Exception as error:  # reported; generation stops in the hook
                errors.append(str(error) if isinstance(error, ValueError) else f"{name}: {error}")
                value = answers.get(name)
            context[name] = value
        return context, errors


# -- Jinja: cookiecutter's environment renders with copier's names


def install(environment: jinja2.Environment, root: Path) -> None:
    """Give `environment` copier's filters, and make each of its templates see copier's answers
    beside cookiecutter's namespace, and `copier_errors` (the refusals) and `template_root` for
    the hooks."""
    environment.filters.update(FILTERS)
    known = Questionnaire(root)
    # cookiecutter renders every file name and file with the same answers: evaluate them once.
    evaluated: dict[str, tuple[dict[str, Any], list[str]]] = {}

    class CopierTemplate(environment.template_class):  # type: ignore[misc,name-defined]
        def render(self, *args: Any, **kwargs: Any) -> str:
            variables = dict(*args, **kwargs)
            answers = variables.get(NAMESPACE)
            if isinstance(answers, Mapping):
                key = json.dumps(answers, sort_keys=True, default=str)
                if key not in evaluated:
                    evaluated[key] = known.context(answers)
                context, errors = evaluated[key]
                extra = {"copier_errors": errors, "template_root": str(root)}
                variables = {**context, **extra, **variables}
            return super().render(variables)

    environment.template_class = CopierTemplate

    def message_after_copy(answers: Mapping[str, Any]) -> str:
        """copier.yml's `_message_after_copy` for cookiecutter's answers; the project's path as
        cookiecutter made it (absolute: the hook does not know the user's directory)."""
        context, _ = known.context(answers)
        project = str(answers.get("__project_dir", "."))
        output = answers.get("_output_dir")  # the cookiecutter CLI sets it; cruft does not
        destination = str(Path(output, project).resolve()) if output else project
        conf = {"_copier_conf": {"dst_path": destination}}
        return str(known.render(known.config.get("_message_after_copy", ""), {**context, **conf}))

    environment.globals["copier_message_after_copy"] = message_after_copy
