"""Which way a call went (incoming, outgoing, internal) and through which external number.

Asterisk does not say; each account tells us its trunks, inbound contexts, DIDs and extension
pattern. One function decides for the CSV import, the AMI feed and the JSON ingest alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase

from callhistory.models import CallType

DEFAULT_EXTENSIONS = r"^[0-9]{2,5}$"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PbxConfig:
    """An account's PBX layout. Trunks are glob patterns on channel names (`PJSIP/trunk-*`)."""

    trunks: tuple[str, ...] = ()
    inbound_contexts: tuple[str, ...] = ("from-trunk", "from-pstn", "from-external")
    dids: tuple[str, ...] = ()
    extensions: str = DEFAULT_EXTENSIONS
    _extension_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "_extension_re", re.compile(self.extensions))
        except re.error as exc:
            raise ConfigError(f"--extensions is not a valid regular expression: {exc}") from None

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("_extension_re", None)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | None) -> PbxConfig:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            trunks=tuple(data.get("trunks", ())),
            inbound_contexts=tuple(data.get("inbound_contexts", cls.inbound_contexts)),
            dids=tuple(data.get("dids", ())),
            extensions=data.get("extensions", DEFAULT_EXTENSIONS),
        )

    def is_extension(self, number: str) -> bool:
        return bool(number) and self._extension_re.search(number) is not None

    def is_trunk(self, channel: str) -> bool:
        return bool(channel) and any(fnmatchcase(channel, pattern) for pattern in self.trunks)


def channel_peer(channel: str) -> str:
    """`PJSIP/102-0000001a` → `102`; `Local/100@from-internal-00000;1` → `100`."""
    name = channel.split("/", 1)[-1]
    name = name.split("@", 1)[0]
    return re.sub(r"-[0-9a-fA-F]+(;\d)?$", "", name)


def classify(
    config: PbxConfig,
    *,
    src: str,
    dst: str,
    channel: str = "",
    dcontext: str = "",
    dstchannels: Sequence[str] = (),
) -> tuple[CallType, str | None]:
    """The call's type and external number, from its first leg and the channels it reached."""
    if config.is_trunk(channel) or dcontext in config.inbound_contexts or dst in config.dids:
        if dst in config.dids:
            return CallType.INCOMING, dst
        return CallType.INCOMING, config.dids[0] if len(config.dids) == 1 else None
    trunk_out = next((c for c in dstchannels if config.is_trunk(c)), None)
    if trunk_out is not None or (config.is_extension(src) and not config.is_extension(dst)):
        if config.dids:
            return CallType.OUTGOING, config.dids[0]
        return CallType.OUTGOING, channel_peer(trunk_out) if trunk_out else None
    if config.is_extension(src):
        return CallType.INTERNAL, None
    # An outside number reaching us on a line we were not told about.
    return CallType.INCOMING, config.dids[0] if len(config.dids) == 1 else None
