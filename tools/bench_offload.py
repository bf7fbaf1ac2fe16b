"""Decode speed and peak RSS with 100 %, 50 % and 25 % of the layers resident (--max-memory),
with and without the read-ahead hint; each run in a fresh process (VmHWM from the kernel).

    python tools/bench_offload.py [model.ingot | file.gguf] --threads 1,2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKER = r'''
import json, sys, time
import numpy as np
import ingot
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
art, budget, threads, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
m = ingot.load(art, threads=threads, max_memory=None if budget == "none" else int(budget),
               prefetch=prefetch)
logits = m.prefill(list(range(2, 130)))
t = int(np.argmax(logits))
logits = m.decode(t)
toks, t0 = [], time.perf_counter()
for _ in range(48):
    t = int(np.argmax(logits))
    toks.append(t)
    logits = m.decode(t)
dt = time.perf_counter() - t0
print(json.dumps({"tok_s": 48 / dt, "peak": hwm(), "streamed": len(m.streamed_units),
                  "tokens": toks}))
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="artefact or GGUF (default: the bundled Gemma)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--max-seq-len", type=int, default=1024)
    args = ap.parse_args(argv)

    import ingot
    from ingot.runtime.offload import fixed_bytes
    from ingot.default_model import artefact_for
    path = artefact_for(args.model, max_seq_len=args.max_seq_len)
    with ingot.load(path) as m:
        plan = m.plan
    units = plan["units"]
    layers = [u["bytes"] for u in units if u["name"].startswith("layer")]
    others = sum(u["bytes"] for u in units if not u["name"].startswith("layer"))
    print("| threads | layers resident | --max-memory MiB | read-ahead | decode tok/s | "
          "peak RSS MiB | streamed units | same tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for th in (int(t) for t in args.threads.split(",")):
        ref = None
        for frac in (1.0, 0.5, 0.25):
            k = round(frac * len(layers))
            # The largest units are kept first: the other units, then k layers, plus room for
            # the one streamed layer (and page slack).
            budget = None if frac == 1.0 else \
                fixed_bytes(plan, th) + others + (k + 1) * max(layers) + 64 * 4096
            for prefetch in ((1,) if budget is None else (1, 0)):
                out = subprocess.run([sys.executable, "-c", WORKER, str(path),
                                      str(budget or "none"), str(th), str(prefetch)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                ref = ref or r["tokens"]
                print(f"| {th} | {100 * frac:.0f} % | "
                      f"{'-' if budget is None else f'{budget / 2**20:.1f}'} | "
                      f"{'on' if prefetch else 'off'} | {r['tok_s']:.1f} | "
                      f"{r['peak'] / 2**20:.0f} | {r['streamed']} | "
                      f"{'yes' if r['tokens'] == ref else 'NO'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
