"""Flower start script: no credentials, no Flower."""

from __future__ import annotations

import pytest

from {{ package_path }}.flower import (
    credentials_problem,
    main,
)


@pytest.mark.parametrize(
    "value",
    ["", "admin", "admin:", ":long-enough-password", "admin:short", "ops:long-enough-pass,dev:x"],
)
def test_unacceptable_credentials_are_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert credentials_problem(value) is not None
    monkeypatch.setenv("FLOWER_BASIC_AUTH", value)
    assert main([]) == 1


def test_user_password_pairs_are_accepted() -> None:
    assert credentials_problem("ops:correct-horse-battery,dev:staple-staple-staple") is None
