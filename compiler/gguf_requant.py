"""`ingot convert -m model.gguf --isq Q8_0 -o out.gguf`: a GGUF re-quantized by Ingot's encoders.

Every tensor gets the storage type a compile of the same file with the same --isq/--dtype/
--quant-policy would give it (the policy sees the same roles, shapes and source types), so the
new file compiled without --isq holds the weights that `ingot compile --isq` of the original
holds (a tied output head excepted: the file keeps one table, at the embedding's type), and
llama.cpp can run it too: the two engines compared on one file. The metadata is copied
as it is (tokenizer, chat template, hyperparameters); only the file-type key is dropped, since it
would describe the old encoding. Tensors whose type does not change are copied byte for byte;
the others are widened to float32 and encoded a run of rows at a time (bounded memory, as a
compile). Written beside the destination and renamed into place when complete.
"""
from __future__ import annotations

import pathlib

import numpy as np

from .gguf_convert import partial_file
from .gguf_file import read_gguf
from ..quant.registry import get_format

_DROPPED = ("general.file_type",)  # would name the old encoding
ROWS_BYTES = 8 << 20  # float32 bytes widened at a time


def requantize_gguf(src, policy, output) -> pathlib.Path:
    import gguf
    path = src.hashed_files[0]
    reader = gguf.GGUFReader(str(path))
    tensors = read_gguf(path)[1]
    roles = _role_of_each_tensor(src)
    output = pathlib.Path(output)
    with partial_file(output) as tmp:
        arch = str(reader.fields["general.architecture"].contents())
        w = gguf.GGUFWriter(str(tmp), arch)
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name in (
                    "general.architecture", "general.alignment", *_DROPPED):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(field.name, field.contents(), vtype, sub)
        plans = []
        for t in reader.tensors:
            ref = tensors[t.name]
            fmt = get_format(policy.choose(roles.get(t.name, t.name), ref.shape, ref.qtype))
            nbytes = fmt.nbytes(ref.shape)
            w.add_tensor_info(t.name, list(ref.shape), np.dtype(np.float32), nbytes,
                              raw_dtype=gguf.GGMLQuantizationType(fmt.gguf_type))
            plans.append((ref, fmt, nbytes))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        out = w.fout[0]
        w.write_padding(out, out.tell())
        for ref, fmt, nbytes in plans:
            written = 0
            for chunk in _encoded(ref, fmt):
                out.write(chunk)
                written += len(chunk)
            assert written == nbytes, (ref.name, written, nbytes)
            w.write_padding(out, nbytes)
        w.close()
    return output


def _role_of_each_tensor(src) -> dict:
    """GGUF tensor name -> the canonical role a compile's policy sees for it."""
    from .gguf_convert import _roles
    out = {}
    for role in _roles(src):
        ref = src.lookup(role)
        if ref is not None and getattr(ref, "name", None):
            out.setdefault(ref.name, role)
    return out


def _encoded(ref, fmt):
    """The tensor's bytes in `fmt`: its own when the type is unchanged, else encoded in runs of
    whole rows (every format encodes each row on its own, so runs give the same bytes)."""
    if fmt.name == ref.qtype:
        yield bytes(ref.raw())
        return
    rows, k = int(np.prod(ref.shape[:-1])), ref.shape[-1]
    step = max(1, ROWS_BYTES // (4 * k))
    for r0 in range(0, rows, step):
        x = ref.read_rows(r0, min(rows, r0 + step))
        yield np.ascontiguousarray(fmt.quantize(x.reshape(-1, k))).view(np.uint8).tobytes()
