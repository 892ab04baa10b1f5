"""Text for a terminal: the one function every CLI print site passes untrusted text through.

User ids are any UTF-8 the relay accepts, conversation names come from our own other devices,
message texts from anyone who can send to us, event details and error messages from the store
and the network. Printed raw, such text can hold a newline that forges a line of output
("alice/1: ..."), a carriage return that overwrites one, ESC or CSI sequences that move the
cursor, recolour or hide text, or Unicode bidi overrides that reorder what the reader sees.

Text is cleaned once, where it is printed: cleaning is injective (two different texts never
show the same), so it is not idempotent, and text cleaned twice shows its escapes escaped.
"""

from __future__ import annotations

_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def clean(text: str) -> str:
    """``text`` with every character that is not printable replaced by a visible escape
    (``\\n``, ``\\t``, ``\\x1b``, ``\\u202e``, ...), so what is printed is one line that only
    shows characters: no C0 or C1 control (tab, newline, carriage return, ESC, DEL, CSI
    included), no Unicode format character (bidi overrides and isolates, zero-width
    characters), no line or paragraph separator, no unassigned, private-use or surrogate code
    point (``str.isprintable``: Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs other than
    the ASCII space). A backslash, which starts every escape, is shown as ``\\\\``, so that
    two different texts never show the same (``"\\x1b"``, four characters, is not ESC); any
    other printable text is left as it is."""
    return "".join(c if c.isprintable() and c != "\\" else _escape(c) for c in text)


__all__ = ["clean"]
