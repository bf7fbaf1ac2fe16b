"""Refuses artefacts built for another machine before their code is ever called."""
from __future__ import annotations

import platform

from ..errors import IngotError


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def why_not_runnable(target: dict):
    """None when this host can run code built for `target` (an artefact header's "target"),
    else the reason, naming the machine or the missing CPU flags."""
    machine = platform.machine()
    if target.get("machine") and target["machine"] != machine:
        return (f"built for {target['machine']} (target '{target.get('name')}'), this host "
                f"is {machine}")
    need = set(target.get("required_flags", []))
    missing = sorted(need - cpu_flags()) if need else []
    if missing:
        return (f"needs {', '.join(missing)}, which this CPU lacks (target "
                f"'{target.get('name')}', cpu {target.get('cpu')})")
    return None


def check_target(target: dict, path) -> None:
    why = why_not_runnable(target)
    if why:
        raise IngotError(f"{path}: artefact {why}")
