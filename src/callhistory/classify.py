"""Which way a call went (incoming, outgoing, internal) and through which external number.

Asterisk does not say; each account tells us its trunks, inbound contexts, DIDs and extension
pattern. One function decides for the CSV import, the AMI feed and the JSON ingest alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from fnmatch import translate

from callhistory.models import CallType

DEFAULT_EXTENSIONS = r"^[0-9]{2,5}$"
#: Clearly beyond the PBX: 7 or more digits (a city, mobile or long-distance number, with or
#: without a leading 8 or 9 to get a line), or an international `+`/`00` prefix.
DEFAULT_OUTSIDE_NUMBERS = r"^\+?[0-9]{7,}$|^(\+|00)[0-9]{3,}$"


class ConfigError(ValueError):
    pass


_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]+(;\d)?$")
#: FreePBX's Local channel names put a helper prefix before the extension they ring: follow-me
#: (`FMGL-`, `FMPR-`), ring groups with confirmation (`LC-`, `RG-`).
_LOCAL_PREFIX = re.compile(r"^(?:FMGL|FMPR|LC|RG)-", re.IGNORECASE)
#: What a person dials: digits and the keypad's * # +; not `s`, `h`, `hangup`, `i`, `t`...
_DIALLED = re.compile(r"[0-9*#+]+")


class Kind(Enum):
    """What a channel is to the account's PBX."""

    NONE = "none"  # no channel (the JSON ingest)
    TRUNK = "trunk"  # a line to the operator (--trunk)
    EXTENSION = "extension"  # a phone: SIP/101-0000002a
    LOCAL = "local"  # the PBX talking to itself: Local/101@from-internal-00000012;1
    OTHER = "other"  # a device we were not told about (an unlisted trunk, DAHDI...)


def channel_peer(channel: str) -> str:
    """`PJSIP/102-0000001a` → `102`; `Local/100@from-internal-00000;1` → `100`."""
    name = channel.split("/", 1)[-1]
    name = name.split("@", 1)[0]
    return _CHANNEL_SUFFIX.sub("", name)


def is_local(channel: str) -> bool:
    return channel[:6].lower() == "local/"


def _local_name(channel: str) -> str:
    """`Local/FMGL-1002#@ext-findmefollow-000a;1` → `1002`."""
    return _LOCAL_PREFIX.sub("", channel_peer(channel)).rstrip("#")


def dialled(number: str) -> bool:
    """A number someone dialled (`101`, `*98`, `+998...`), not a dialplan word (`s`, `hangup`)."""
    return _DIALLED.fullmatch(number) is not None


@dataclass(frozen=True)
class PbxConfig:
    """An account's PBX layout. Trunks are glob patterns on channel names (`PJSIP/trunk-*`)."""

    trunks: tuple[str, ...] = ()
    inbound_contexts: tuple[str, ...] = ("from-trunk", "from-pstn", "from-external")
    dids: tuple[str, ...] = ()
    extensions: str = DEFAULT_EXTENSIONS
    outside_numbers: str = DEFAULT_OUTSIDE_NUMBERS
    _extension_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _outside_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    #: The trunk globs as one pattern (fnmatchcase's, matched once per channel, not per glob).
    _trunk_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        globs = "|".join(f"(?:{translate(pattern)})" for pattern in self.trunks)
        object.__setattr__(self, "_trunk_re", re.compile(globs) if self.trunks else None)
        for attribute, option, pattern in (
            ("_extension_re", "--extensions", self.extensions),
            ("_outside_re", "--outside-numbers", self.outside_numbers),
        ):
            try:
                object.__setattr__(self, attribute, re.compile(pattern))
            except re.error as exc:
                raise ConfigError(f"{option} is not a valid regular expression: {exc}") from None

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("_extension_re", None)
        data.pop("_outside_re", None)
        data.pop("_trunk_re", None)
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
            outside_numbers=data.get("outside_numbers", DEFAULT_OUTSIDE_NUMBERS),
        )

    def is_extension(self, number: str) -> bool:
        return bool(number) and self._extension_re.search(number) is not None

    def is_outside(self, number: str) -> bool:
        """A number beyond the PBX (by --outside-numbers), whoever dialled it."""
        return bool(number) and self._outside_re.search(number) is not None

    def is_trunk(self, channel: str) -> bool:
        return bool(channel) and self._trunk_re is not None and bool(self._trunk_re.match(channel))

    def kind(self, channel: str) -> Kind:
        if not channel:
            return Kind.NONE
        if self.is_trunk(channel):
            return Kind.TRUNK
        if is_local(channel):
            return Kind.LOCAL
        return Kind.EXTENSION if self.is_extension(channel_peer(channel)) else Kind.OTHER

    def party(self, channel: str) -> str | None:
        """The extension a channel reaches, through FreePBX's Local helpers
        (`Local/FMGL-1002@ext-findmefollow-…;1` → `1002`, `Local/460@from-queue-…;1` → `460`);
        None for a trunk or a helper that names no extension (`Local/ch1@TimeDelay-…;1`)."""
        if not channel or self.is_trunk(channel):
            return None
        name = _local_name(channel) if is_local(channel) else channel_peer(channel)
        return name if self.is_extension(name) else None


def _incoming(config: PbxConfig, dst: str) -> tuple[CallType, str | None]:
    if dst in config.dids:
        return CallType.INCOMING, dst
    return CallType.INCOMING, config.dids[0] if len(config.dids) == 1 else None


def _from_inside(config: PbxConfig, dst: str, trunk: str | None) -> tuple[CallType, str | None]:
    """A call the PBX's side placed: Outgoing if it reached a trunk or dialled a number that is
    clearly outside; otherwise (an extension, a feature code, an IVR, voicemail) Internal."""
    if trunk is None and not config.is_outside(dst):
        return CallType.INTERNAL, None
    if config.dids:
        return CallType.OUTGOING, config.dids[0]
    return CallType.OUTGOING, channel_peer(trunk) if trunk else None


def classify(
    config: PbxConfig,
    *,
    src: str,
    dst: str,
    channel: str = "",
    dcontext: str = "",
    reached: Sequence[str] = (),
) -> tuple[CallType, str | None]:
    """The call's type and external number, from its first leg (who called, from which channel,
    what they dialled) and every other channel the call reached.

    The calling channel decides first: a trunk is Incoming; a phone (an extension's channel) is
    Outgoing or Internal, whatever context its call ran in; the PBX itself (a `Local/` channel:
    a call file, ChanSpy, a helper) likewise, unless it carries an outside caller. A channel we
    were not told about is Incoming when its context is inbound, it dialled a DID, or its caller
    is not an extension (an outside number, or none: an anonymous caller).
    """
    trunk = next((c for c in reached if config.is_trunk(c)), None)
    kind = config.kind(channel)
    if kind is Kind.TRUNK:
        return _incoming(config, dst)
    if kind is Kind.EXTENSION:
        return _from_inside(config, dst, trunk)
    if kind is Kind.LOCAL:
        helper = not dialled(_local_name(channel))  # Local/spy|play@…, Local/ch1@TimeDelay…
        if not src or config.is_extension(src) or helper:
            return _from_inside(config, dst, trunk)
        return _incoming(config, dst)
    if dcontext in config.inbound_contexts or dst in config.dids:
        return _incoming(config, dst)
    if config.is_extension(src):
        return _from_inside(config, dst, trunk)
    return _incoming(config, dst)
