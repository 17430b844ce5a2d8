"""callhistory: the call-history service of a cloud PBX."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`__version__`, read from the installed metadata when first asked for (one version, from
    pyproject.toml; reading it costs ~70 ms that `callhistory --help` need not pay)."""
    if name != "__version__":
        raise AttributeError(name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("callhistory")
    except PackageNotFoundError:  # pragma: no cover - a source tree never installed
        return "0.0.0"
