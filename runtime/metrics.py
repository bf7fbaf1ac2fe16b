"""The server's `/metrics`: Prometheus text exposition of the engine's counters and gauges."""
from __future__ import annotations


def render_metrics(engine, http_counts: dict) -> str:
    s = engine.stats
    busy = engine.busy_seconds
    rows = [
        ("ingot_requests_total", "counter", "generation requests accepted", s["requests"]),
        ("ingot_requests_rejected_total", "counter", "requests refused with a full queue",
         s["rejected"]),
        ("ingot_prompt_tokens_total", "counter", "prompt tokens prefilled", s["prompt_tokens"]),
        ("ingot_completion_tokens_total", "counter", "tokens generated", s["completion_tokens"]),
        ("ingot_decode_steps_total", "counter", "batched decode steps", s["decode_steps"]),
        ("ingot_decode_rows_total", "counter", "sequence-tokens decoded in those steps",
         s["decode_rows"]),
        ("ingot_queue_depth", "gauge", "requests waiting for a sequence slot", engine.queued),
        ("ingot_running_requests", "gauge", "requests holding a sequence slot", engine.running),
        ("ingot_free_slots", "gauge", "sequence slots free", engine.free_slots),
        ("ingot_slots", "gauge", "sequence slots compiled (--max-batch)", len(engine.slots)),
        ("ingot_busy_seconds_total", "counter", "seconds the engine spent stepping", busy),
        ("ingot_tokens_per_second", "gauge", "generated tokens per busy second",
         s["completion_tokens"] / busy if busy else 0.0),
    ]
    out = []
    for name, kind, help_, value in rows:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {float(value):g}"]
    out += ["# HELP ingot_finished_total requests ended, by reason",
            "# TYPE ingot_finished_total counter"]
    for reason in ("stop", "length", "cancelled", "error"):
        out.append(f'ingot_finished_total{{reason="{reason}"}} {s["finished_" + reason]}')
    out += ["# HELP ingot_http_responses_total HTTP responses, by status",
            "# TYPE ingot_http_responses_total counter"]
    for status, n in sorted(http_counts.items()):
        out.append(f'ingot_http_responses_total{{status="{status}"}} {n}')
    return "\n".join(out) + "\n"
