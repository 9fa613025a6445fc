"""The bad-config corpus: each file fails with the located, worded messages it expects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reactor.config import ConfigError, load_config, validate_files

CORPUS = Path(__file__).parents[2] / "fixtures" / "bad_configs"
CASES = sorted(CORPUS.glob("*.yaml"))


def test_corpus_is_large_enough() -> None:
    """The corpus has at least 20 cases, each with an expected-message file."""
    assert len(CASES) >= 20
    for case in CASES:
        assert case.with_suffix(".expected").is_file(), case


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_config(case: Path) -> None:
    """Every expected regex matches a reported issue, and no pydantic text leaks."""
    issues = validate_files([case])
    assert issues, f"{case.name} unexpectedly validated"
    output = "\n".join(str(i) for i in issues)
    patterns = case.with_suffix(".expected").read_text().splitlines()
    for pattern in filter(None, patterns):
        assert re.search(pattern, output, re.MULTILINE), f"{pattern!r} not in:\n{output}"
    assert "Input should" not in output
    assert "pydantic" not in output
    assert len(issues) >= len([p for p in patterns if p])


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_load_config_raises_with_every_issue(case: Path) -> None:
    """load_config raises one ConfigError holding the same issues, in file order."""
    with pytest.raises(ConfigError) as info:
        load_config(case)
    issues = info.value.issues
    assert list(issues) == validate_files([case])
    assert [(i.line, i.column) for i in issues] == sorted((i.line, i.column) for i in issues)
