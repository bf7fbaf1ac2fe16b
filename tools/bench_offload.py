"""Decode speed and peak RSS with 100 %, 50 % and 25 % of the layers resident (--max-memory),
with and without the read-ahead hint; each run in a fresh process (VmHWM from the kernel).

The page cache is warm (the artefact's pages stay cached between steps) unless --cold: then
before every step the artefact's unmapped pages are evicted (posix_fadvise DONTNEED; the
resident units stay, they are mapped), so every streamed layer comes from the disk, as on a
host whose page cache cannot hold the file. Only the steps are timed.

    python tools/bench_offload.py [model.ingot | file.gguf] --threads 1,2 [--cold]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKER = r'''
import json, os, sys, time
import numpy as np
import ingot
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
art, budget, threads, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
cold = sys.argv[5] == "1"
fd = os.open(art, os.O_RDONLY)
def evict():
    if cold:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
m = ingot.load(art, threads=threads, max_memory=None if budget == "none" else int(budget),
               prefetch=prefetch)
logits = m.prefill(list(range(2, 130)))
t = int(np.argmax(logits))
logits = m.decode(t)
toks, dt = [], 0.0
for _ in range(48):
    t = int(np.argmax(logits))
    toks.append(t)
    evict()
    t0 = time.perf_counter()
    logits = m.decode(t)
    dt += time.perf_counter() - t0
print(json.dumps({"tok_s": 48 / dt, "peak": hwm(), "streamed": len(m.streamed_units),
                  "tokens": toks}))
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="artefact or GGUF (default: the bundled Gemma)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--max-seq-len", type=int, default=1024)
    ap.add_argument("--cold", action="store_true",
                    help="evict the artefact's unmapped pages before every step")
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
            for prefetch in ((1,) if frac == 1.0 else (1, 0)):
                # The largest units are kept first: the other units, then k layers, plus room
                # for the streamed layers held at once (two with read-ahead) and page slack.
                budget = None if frac == 1.0 else fixed_bytes(plan, th) + others + \
                    (k + 1 + prefetch) * max(layers) + 64 * 4096
                out = subprocess.run([sys.executable, "-c", WORKER, str(path),
                                      str(budget or "none"), str(th), str(prefetch),
                                      "1" if args.cold else "0"],
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
