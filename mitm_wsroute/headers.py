"""`Headers`: HTTP header fields as a read-only, case-insensitive mapping that keeps repeats.

Pure: this module imports neither mitmproxy nor asyncio.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

__all__ = ["Headers", "HeadersLike", "header_fields"]

#: What `reject()` and `accept()` take as extra headers: a mapping, or (name, value) pairs
#: (to repeat a name).
HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]


def header_fields(headers: HeadersLike | None) -> tuple[tuple[str, str], ...]:
    """`headers` as (name, value) pairs, checked.

    Raises:
        ValueError: a name or value is not a `str`, or holds a line break (header injection).
    """
    if headers is None:
        return ()
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    for pair in pairs:
        if not (
            isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise ValueError(f"headers must map str to str, or be (str, str) pairs, not {pair!r}")
        if any(c in p for p in pair for c in "\r\n\0") or not pair[0] or ":" in pair[0]:
            raise ValueError(f"header {pair[0]!r}: {pair[1]!r} cannot be sent on the wire")
    return tuple(pairs)


class Headers(Mapping[str, str]):
    """Header fields in the order they came, names compared case-insensitively.

    ``headers["name"]`` joins repeated fields with ``", "`` (RFC 9110 §5.3); `get_all` gives
    each value, and `fields` every (name, value) pair as sent.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self.fields: tuple[tuple[str, str], ...] = tuple(fields)

    def get_all(self, name: str) -> list[str]:
        """Every value of the fields named `name`, in order (``[]`` if none)."""
        name = name.lower()
        return [v for n, v in self.fields if n.lower() == name]

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __iter__(self) -> Iterator[str]:
        """Each name once, lowercase, in the order of its first field."""
        return iter(dict.fromkeys(n.lower() for n, _ in self.fields))

    def __len__(self) -> int:
        return len({n.lower() for n, _ in self.fields})

    def __repr__(self) -> str:
        return f"Headers({list(self.fields)!r})"
