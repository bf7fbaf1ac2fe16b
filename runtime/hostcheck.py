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


def check_target(target: dict, path) -> None:
    machine = platform.machine()
    if target.get("machine") and target["machine"] != machine:
        raise IngotError(f"{path}: artefact was compiled for {target['machine']} "
                         f"(target '{target.get('name')}'), this host is {machine}")
    need = set(target.get("required_flags", []))
    missing = sorted(need - cpu_flags()) if need else []
    if missing:
        raise IngotError(f"{path}: this CPU lacks {', '.join(missing)}, which the artefact's "
                         f"target '{target.get('name')}' ({target.get('cpu')}) requires")
