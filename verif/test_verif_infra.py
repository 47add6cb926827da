"""The regression's own machinery: tests that need Icarus fail (not skip) under CI."""

import pytest
from conftest import require_icarus


def test_icarus_missing_skips_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="iverilog"):
        require_icarus(have=False)


def test_icarus_missing_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_icarus(have=False)
    require_icarus(have=True)   # present: nothing happens
