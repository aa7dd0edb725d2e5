"""What a client may call itself, and how a client's words are shown to people and on terminals.

A client's name is its own claim, chosen by whoever registered it. Registration and metadata documents
refuse control and format characters (terminal escape sequences; bidi overrides that reorder what a
person reads); the sign-in page strips them and `pixazo-mcp oauth clients` escapes them, for rows that
an older version let in.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 200
SHOWN_NAME_CHARS = 80
# Cc: C0 and C1 controls (ESC, BEL, CSI...); Cf: format characters, among them the bidi embeddings,
# overrides, isolates and marks; Zl, Zp: line and paragraph separators; Cs: lone surrogates; Co: private use.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN


def name_problem(name: str | None) -> str | None:
    """Why a client_name cannot be accepted, or None when it can (no name is fine too)."""
    if name is None:
        return None
    if len(name) > MAX_NAME_CHARS:
        return f"client_name is longer than {MAX_NAME_CHARS} characters"
    if any(_hidden(c) for c in name):
        return "client_name contains control or formatting characters"
    return None


def shown_name(name: str, limit: int = SHOWN_NAME_CHARS) -> str:
    """A name fit for a page: control and format characters gone, whitespace collapsed, at most `limit`."""
    cleaned = " ".join("".join(" " if c.isspace() else "" if _hidden(c) else c for c in name).split())
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 1].rstrip() + "…"


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escaped(text: str) -> str:
    """Text fit for a terminal: every control and format character written out (\\x1b, \\u202e)."""
    return "".join(_escape(c) if _hidden(c) else c for c in text)
