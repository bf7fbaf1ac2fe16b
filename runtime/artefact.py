"""The artefact format: the only contract between compiler and runtime.

Layout (little-endian):
    0   magic  b"INGOTAF\\0"
    8   u32    format version
    12  u32    reserved (0)
    16  u64    header offset      (the JSON header sits after the sections)
    24  u64    header length
    32  u32    CRC-32 of the header
    ..  sections, each aligned (weights to a page, so they can be mapped and used in place)
    ..  JSON header: {"format_version", "ingot_version", "target", "sections": [{name, offset,
        size, crc32}], ...}

The writer streams sections into a temporary file beside the destination and renames it into
place only when complete, so a failed compile never leaves a partial artefact. The same inputs
give the same bytes: no timestamps, sorted JSON keys.
"""
from __future__ import annotations

import json
import mmap
import os
import pathlib
import struct
import tempfile
import zlib

from ..errors import IngotError

MAGIC = b"INGOTAF\0"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sIIQQI")
PREAMBLE_SIZE = 64
PAGE = 4096


class ArtefactWriter:
    """Use as a context manager: add sections in order, `set_header`, and it commits on exit."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.sections: list = []
        self.header: dict = {}

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                         dir=self.path.parent)
        self.f = os.fdopen(fd, "w+b")
        self.f.write(b"\0" * PREAMBLE_SIZE)
        return self

    def add(self, name: str, chunks, align: int = 64) -> None:
        """Append a section from bytes or an iterable of bytes chunks (streamed)."""
        pos = self.f.tell()
        pad = (-pos) % align
        self.f.write(b"\0" * pad)
        start, crc, size = pos + pad, 0, 0
        for chunk in ([chunks] if isinstance(chunks, (bytes, bytearray, memoryview)) else chunks):
            self.f.write(chunk)
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
        self.sections.append({"name": name, "offset": start, "size": size, "crc32": crc,
                              "align": align})

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                head = dict(self.header, format_version=FORMAT_VERSION, sections=self.sections)
                blob = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
                off = self.f.tell()
                self.f.write(blob)
                self.f.seek(0)
                self.f.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, off, len(blob),
                                            zlib.crc32(blob)))
                self.f.flush()
                os.fsync(self.f.fileno())
            self.f.close()
            if exc_type is None:
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
        return False


class Artefact:
    """A mapped artefact: `header`, and `section(name)` as a zero-copy memoryview."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise IngotError(f"{self.path}: cannot open artefact ({e.strerror})") from None
        size = os.fstat(self._file.fileno()).st_size
        if size < PREAMBLE_SIZE:
            self.close()
            raise IngotError(f"{self.path}: not an Ingot artefact (file too short)")
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        magic, version, _, hoff, hlen, hcrc = _PREAMBLE.unpack_from(self._mm, 0)
        if magic != MAGIC:
            self.close()
            raise IngotError(f"{self.path}: not an Ingot artefact (bad magic number)")
        if version > FORMAT_VERSION:
            self.close()
            raise IngotError(f"{self.path}: artefact format version {version} is newer than "
                             f"this runtime supports ({FORMAT_VERSION}); upgrade ingot-lm")
        if version < FORMAT_VERSION:
            self.close()
            raise IngotError(f"{self.path}: artefact format version {version} is too old; "
                             f"recompile it")
        if hoff + hlen > size:
            self.close()
            raise IngotError(f"{self.path}: artefact is truncated ({size} bytes, header ends at "
                             f"{hoff + hlen})")
        blob = self._mm[hoff:hoff + hlen]
        if zlib.crc32(blob) != hcrc:
            self.close()
            raise IngotError(f"{self.path}: artefact header is corrupt (checksum mismatch)")
        self.header = json.loads(blob)
        self._sections = {s["name"]: s for s in self.header["sections"]}
        for s in self.header["sections"]:
            if s["offset"] + s["size"] > hoff:
                self.close()
                raise IngotError(f"{self.path}: artefact section '{s['name']}' is truncated")

    def has(self, name: str) -> bool:
        return name in self._sections

    def section(self, name: str, *, check: bool = True) -> memoryview:
        s = self._sections.get(name)
        if s is None:
            raise IngotError(f"{self.path}: artefact has no '{name}' section")
        view = memoryview(self._mm)[s["offset"]:s["offset"] + s["size"]]
        if check and zlib.crc32(view) != s["crc32"]:
            raise IngotError(f"{self.path}: artefact section '{name}' is corrupt "
                             f"(checksum mismatch)")
        return view

    def span(self, name: str) -> tuple:
        """(file offset, size) of a section, for reading it other than through the map."""
        s = self._sections[name]
        return s["offset"], s["size"]

    def json(self, name: str) -> dict:
        return json.loads(bytes(self.section(name)))

    def section_info(self) -> list:
        return list(self.header["sections"])

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views still alive; the map closes when they go
        self._file.close()
