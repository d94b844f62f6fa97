"""What every application message is: the `Message` base (its `TYPE` and wire-shape switches), and the
`UnknownMessage` a payload of a type this version does not know becomes."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs


@attrs.frozen
class Message:
    """Base of every application message; `TYPE` is its `app_message_type`."""

    TYPE: ClassVar[str] = ""
    #: Fields with a fixed value on the wire (e.g. ``"status": "cancelled"``); written, never read.
    CONSTANTS: ClassVar[dict[str, Any]] = {}
    #: Optional fields that are sent as ``null`` rather than left out.
    KEEP_NULL: ClassVar[frozenset[str]] = frozenset()
    #: Fields left out on the wire while they hold their default (so older peers see the bytes they know).
    OMIT_DEFAULT: ClassVar[frozenset[str]] = frozenset()


@attrs.frozen
class UnknownMessage:
    """A well-formed payload whose `app_message_type` this version does not know: its own outcome, not an error."""

    app_message_type: str
    payload: dict[str, Any]
