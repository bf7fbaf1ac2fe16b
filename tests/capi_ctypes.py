"""A small ctypes face on libingot.so for the tests that compare it with the Python runtime
(tests/test_capi_chat.py, tests/test_capi_stream.py): the structs and calls of ingot.h they
use. The library is built once per worker by the `libingot` fixture (tests/conftest.py)."""
from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, byref, c_char_p, c_int, c_int32, c_size_t, c_uint8, \
    c_uint32, c_uint64, c_void_p

OK, E_ARG, E_HANDLE, E_SMALL, E_TEXT, E_BUDGET, E_NO_TEMPLATE = 0, -1, -2, -11, -13, -16, -17


class Options(Structure):
    _fields_ = [("size", c_uint32), ("threads", c_int32), ("memory_budget", c_uint64),
                ("context", c_int32), ("mmap", c_int32)]


class Message(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class Memory(Structure):
    _fields_ = [("size", c_uint32), ("n_units", c_int32), ("n_streamed", c_int32),
                ("read_ahead", c_int32), ("budget", c_uint64), ("fixed_bytes", c_uint64),
                ("peak_bytes", c_uint64), ("full_bytes", c_uint64), ("floor_bytes", c_uint64),
                ("huge_page_bytes", c_uint64)]


def load(path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.ingot_open.argtypes = [c_char_p, POINTER(Options), POINTER(c_void_p)]
    lib.ingot_close.argtypes = [c_void_p]
    lib.ingot_last_error.argtypes = [c_void_p]
    lib.ingot_last_error.restype = c_char_p
    lib.ingot_chat_apply.argtypes = [c_void_p, POINTER(Message), c_size_t, c_int, c_char_p,
                                     c_size_t, POINTER(c_size_t)]
    lib.ingot_memory_info.argtypes = [c_void_p, POINTER(Memory), POINTER(c_uint8), c_size_t]
    lib.ingot_tokenize.argtypes = [c_void_p, c_char_p, c_size_t, c_int, POINTER(c_int32),
                                   c_size_t, POINTER(c_size_t)]
    lib.ingot_generate.argtypes = [c_void_p, POINTER(c_int32), c_size_t, c_void_p, c_int32,
                                   c_void_p, c_void_p, POINTER(c_int32)]
    lib.ingot_eval.argtypes = [c_void_p, POINTER(c_int32), c_size_t]
    lib.ingot_logits.argtypes = [c_void_p, POINTER(POINTER(ctypes.c_float)), POINTER(c_int32)]
    return lib


class Handle:
    """An open model: `with Handle(lib, path, threads=1, budget=0, mmap=0) as h: ...`."""

    def __init__(self, lib, path, threads=1, budget=0, mmap=0):
        self.lib, self.m = lib, c_void_p()
        opt = Options(ctypes.sizeof(Options), threads, budget, 0, mmap)
        self.rc = lib.ingot_open(str(path).encode(), byref(opt), byref(self.m))
        self.error = lib.ingot_last_error(None).decode()

    def __enter__(self):
        assert self.rc == OK, self.error
        return self

    def __exit__(self, *exc):
        assert self.lib.ingot_close(self.m) == OK

    def last_error(self) -> str:
        return self.lib.ingot_last_error(self.m).decode()

    def chat(self, msgs, gen: bool, cap: int = 1 << 16):
        """(status, text, needed) for a list of {role, content} (str or bytes)."""
        enc = [(m["role"], m["content"]) for m in msgs]
        enc = [tuple(x.encode() if isinstance(x, str) else x for x in pair) for pair in enc]
        arr = (Message * max(len(enc), 1))(*[Message(r, c) for r, c in enc])
        out, need = ctypes.create_string_buffer(cap + 1), c_size_t()
        rc = self.lib.ingot_chat_apply(self.m, arr, len(enc), int(gen), out, cap, byref(need))
        return rc, out.raw[:min(need.value, cap)].decode("utf-8", "replace"), need.value

    def memory(self):
        info, res = Memory(ctypes.sizeof(Memory)), (c_uint8 * 1024)()
        assert self.lib.ingot_memory_info(self.m, byref(info), res, 1024) == OK, \
            self.last_error()
        return info, [bool(res[i]) for i in range(info.n_units)]

    def tokenize(self, text: str, add_special: bool):
        b = text.encode()
        ids, n = (c_int32 * 8192)(), c_size_t()
        assert self.lib.ingot_tokenize(self.m, b, len(b), int(add_special), ids, 8192,
                                       byref(n)) == OK, self.last_error()
        return list(ids[:n.value])

    def greedy(self, prompt, n: int):
        """Greedy ids after `prompt` (ingot_generate with the default sampling: argmax)."""
        ids = []
        cb_t = ctypes.CFUNCTYPE(c_int, c_int32, c_char_p, c_size_t, c_void_p)
        cb = cb_t(lambda t, text, ln, user: ids.append(t) or 0)
        p = (c_int32 * len(prompt))(*prompt)
        made = c_int32()
        assert self.lib.ingot_generate(self.m, p, len(prompt), None, n, ctypes.cast(cb, c_void_p),
                                       None, byref(made)) == OK, self.last_error()
        return ids


def rewrite(src, dst, edit):
    """A copy of artefact src at dst after edit(plan, sections) changed its plan dict and its
    {name: (bytes, align)} sections (checksums and the header are made anew)."""
    import json

    from ingot.runtime.artefact import Artefact, ArtefactWriter
    art = Artefact(src)
    try:
        secs = {s["name"]: (bytes(art.section(s["name"])), s["align"])
                for s in art.section_info()}
        plan = json.loads(secs["plan"][0])
        edit(plan, secs)
        secs["plan"] = (json.dumps(plan, sort_keys=True).encode(), secs["plan"][1])
        with ArtefactWriter(dst) as aw:
            aw.header = {k: v for k, v in art.header.items()
                         if k not in ("sections", "format_version")}
            for name, (data, align) in secs.items():
                aw.add(name, data, align=align)
    finally:
        art.close()
    return dst
