"""A bounded YAML reader for every file the project reads as YAML (site, tariff, register map).

A YAML file is edited by hand and may be crafted: read naively (``Path.read_text`` and PyYAML's
``safe_load``) a FIFO blocks, ``/dev/zero`` is read for ever, an alias bomb ("billion laughs")
expands to gigabytes, and recursive aliases, deep nesting, unknown tags or non-scalar keys end in
tracebacks. Here each of those
is a :class:`InputFileError` naming the file, the line and what is allowed, raised before any work
grows with the input:

- **regular files only** (a directory, FIFO, socket or device is refused without blocking: the
  file is opened with ``O_NONBLOCK`` and checked with ``fstat``);
- **size**: at most :data:`MAX_BYTES` (256 KiB, 30 times the largest shipped file; PyYAML's pure
  Python parser takes 1-4 s over that much on a 2-core gateway, the worst case);
- **aliases**: at most :data:`MAX_ALIASES` alias uses, none recursive, and the document expanded
  through its aliases (and merge keys) at most :data:`MAX_NODES` nodes;
- **depth**: nesting at most :data:`MAX_DEPTH` levels, counted through aliases too;
- **tags**: every explicit tag (``!!python/object``, ``!custom``, ``!!binary``, ``!!set`` ...) is
  refused, except ``!!str`` (force a value to text);
- **keys**: mapping keys are scalars (``? [a, b]`` and ``{a: 1}: x`` are refused);
- values the constructor cannot build (a date such as ``2024-13-45``, an integer of thousands of
  digits) are errors at their line, not tracebacks.

The module imports nothing from the application, so the device layer's register maps and the
application's configs share it (``ems.yamlio`` builds its loader on :class:`BoundedLoader`), and
:func:`open_regular` (regular files only, a size limit) serves the application's CSV reader too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent

#: largest YAML file read [bytes]
MAX_BYTES = 256 * 1024
#: alias uses (``*name``) allowed in one file
MAX_ALIASES = 100
#: nesting levels allowed (mappings and sequences, through aliases too)
MAX_DEPTH = 64
#: nodes the document may have once every alias and merge key is expanded
MAX_NODES = 100_000
#: the one explicit tag allowed
ALLOWED_TAGS = ("tag:yaml.org,2002:str",)
_TAG_CHARS = 40


class InputFileError(ValueError):
    """A file that cannot be read or is refused: ``where`` (file), ``line`` (1-based or None), ``message``."""

    def __init__(self, where: str, line: int | None, message: str):
        self.where, self.line, self.message = where, line, message
        super().__init__(f"{where}{'' if line is None else f':{line}'}: {message}")


class _Refused(yaml.MarkedYAMLError):
    """A limit of this module, raised inside PyYAML's composer (carries the mark)."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses explicit tags, counts aliases and bounds the nesting while it
    composes. Use :func:`parse`, which also checks the composed graph (cycles, expanded size, keys)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: D102, N803 (PyYAML's hook)
        # the scanner reads a whole flow collection ahead, in quadratic time: stop at the limit
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:  # noqa: D102 (PyYAML's hook)
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(problem=f"more than {MAX_ALIASES} aliases (*name); write the values out",
                               problem_mark=event.start_mark)
        elif isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.tag is not None:
            tag = event.tag
            full = tag if tag.startswith("tag:") else tag.replace("!!", "tag:yaml.org,2002:", 1)
            if full not in ALLOWED_TAGS:
                shown = tag if len(tag) <= _TAG_CHARS else tag[:_TAG_CHARS] + "..."
                raise _Refused(problem=f"tag {shown!r} is not allowed (explicit tags are refused, except !!str); "
                                       "write a plain value", problem_mark=event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:  # noqa: D102 (PyYAML's hook)
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:   # a date such as 2024-13-45, a 5000-digit integer
            text = str(node.value)[:_TAG_CHARS] if isinstance(node, yaml.ScalarNode) else ""
            raise ConstructorError(None, None, f"cannot read the value {text!r}: {str(exc)[:120]}",
                                   node.start_mark) from None


def _check_graph(root: yaml.Node) -> None:
    """Refuse recursive aliases, a document expanding past MAX_NODES or MAX_DEPTH, and non-scalar keys.

    Memoised over the node graph (aliases share nodes), so linear in the composed document."""
    sizes: dict[int, tuple[int, int]] = {}     # node id -> (expanded nodes, expanded height)
    open_: set[int] = set()

    def visit(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in open_:
            raise _Refused(problem="recursive alias (an anchor used inside itself)", problem_mark=node.start_mark)
        if key not in sizes:
            open_.add(key)
            size, height = 1, 0
            if isinstance(node, yaml.MappingNode):
                children = []
                for k, v in node.value:
                    if not isinstance(k, yaml.ScalarNode):
                        raise _Refused(problem="a key must be a plain value (text or a number), not a list or "
                                               "mapping", problem_mark=k.start_mark)
                    children += [k, v]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            for child in children:
                s, h = visit(child, depth + 1)
                size, height = size + s, max(height, h + 1)
                if size > MAX_NODES:
                    raise _Refused(problem=f"the aliases expand to more than {MAX_NODES:,} values (an alias "
                                           "bomb?); write the values out", problem_mark=node.start_mark)
                if depth + 1 + h > MAX_DEPTH:   # at the collection that uses the alias
                    raise _Refused(problem=f"nested deeper than {MAX_DEPTH} levels (through aliases)",
                                   problem_mark=node.start_mark)
            open_.discard(key)
            sizes[key] = (size, height)
        return sizes[key]

    visit(root, 1)


def parse(text: str, where: str, loader: type[BoundedLoader] = BoundedLoader) -> tuple[yaml.Node | None, Any]:
    """The composed node graph (for line numbers) and the data of one YAML document, within the
    limits of this module; :class:`InputFileError` for a syntax error or a refused document."""
    if len(text) > MAX_BYTES:
        raise InputFileError(where, None, f"larger than {_size(MAX_BYTES)} ({len(text):,} characters); "
                                          "a YAML file here is a few KiB")
    reader: BoundedLoader | None = None
    try:
        reader = loader(text)
        node = reader.get_single_node()
        if node is None:
            return None, None
        _check_graph(node)
        return node, reader.construct_document(node)
    except yaml.reader.ReaderError as exc:   # a control character, with its position in the text
        raise InputFileError(where, text[:exc.position].count("\n") + 1,
                            f"control character U+{exc.character:04X} is not allowed in YAML text"
                            if isinstance(exc.character, int) else str(exc.reason)[:120]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        msg = getattr(exc, "problem", None) or str(exc)
        prefix = "" if isinstance(exc, (_Refused, ConstructorError)) else "YAML syntax error: "
        raise InputFileError(where, mark.line + 1 if mark is not None else None, prefix + str(msg)) from None
    finally:
        if reader is not None:
            reader.dispose()


def open_regular(path: str | Path, max_bytes: int, what: str = "file", where: str | None = None) -> BinaryIO:
    """A regular file of at most ``max_bytes`` opened for reading (binary), never blocking: a FIFO,
    socket, device or directory is refused before anything is read. InputFileError otherwise."""
    where = str(path) if where is None else where
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(where, None, "file not found") from None
    except OSError as exc:
        raise InputFileError(where, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
            raise InputFileError(where, None, f"{kind}; give a {what}")
        if st.st_size > max_bytes:
            raise InputFileError(where, None, f"larger than {_size(max_bytes)} ({st.st_size:,} bytes); a {what} "
                                              f"here is at most {_size(max_bytes)}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 else f"{n // 1024} KiB"


def read_text(path: str | Path, where: str | None = None) -> str:
    """The UTF-8 text of a regular file of at most MAX_BYTES, never blocking (FIFO, device, directory)."""
    where = str(path) if where is None else where
    with open_regular(path, MAX_BYTES, "YAML file", where) as fh:
        try:
            raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise InputFileError(where, None, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:   # grew since it was opened
        raise InputFileError(where, None, f"larger than {_size(MAX_BYTES)}; a YAML file here is a few KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputFileError(where, line, f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})") from None
