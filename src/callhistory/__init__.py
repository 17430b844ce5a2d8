"""callhistory: the call-history service of a cloud PBX."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("callhistory")  # one version, from pyproject.toml
except PackageNotFoundError:  # pragma: no cover - running from a source tree never installed
    __version__ = "0.0.0"
