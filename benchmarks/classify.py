"""Accuracy and speed of the LLM error classifier on the labeled corpus.

Run: ``.venv/bin/python benchmarks/classify.py`` (prints markdown tables for a README).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from errtrace.core.rewrite import classify  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "llm_errors.jsonl"
TARGET = 4096

TRACE_HEAD = "".join(
    f'  File "/srv/app/.venv/lib/python3.11/site-packages/openai/_base_client.py", line {900 + i}, '
    f"in _request\n    return self._retry_request(options, cast_to, retries_taken)\n"
    for i in range(40)
)
JSON_TAIL = json.dumps(
    {
        "request_id": "req_0123456789abcdef",
        "usage": None,
        "headers": {
            "x-request-id": "9f1c0e8e-2b7a-4f37-9d55-1b1c7ad1e0f2",
            "cf-ray": "8b2f0c1e2d3a4b5c-AMS",
            "server": "cloudflare",
            "content-type": "application/json",
        },
        "attempt": 3,
    },
)


def pad_to_4kb(text: str) -> str:
    """A corpus message inside a realistic 4 KB log record: traceback, message, JSON."""
    head = "Traceback (most recent call last):\n" + TRACE_HEAD
    body = head[: max(0, TARGET - len(text) - len(JSON_TAIL) - 2)] + "\n" + text + "\n" + JSON_TAIL
    return (body + " " * TARGET)[:TARGET] if len(body) < TARGET else body[:TARGET]


PATHOLOGICAL = [
    "a" * 100_000,
    "(" * 50_000,
    "{" * 20_000 + "}" * 20_000,
    "9" * 100_000,
    " " * 100_000,
    "rate " * 30_000,
    "i " * 50_000 + "cannot",
    "{'a': " * 3_000 + "1" + "}" * 3_000,
]


def timings_us(inputs: list[tuple[str, int | None, str | None]], repeat: int) -> list[float]:
    """Microseconds per classify call, one sample per (input, repetition)."""
    samples: list[float] = []
    clock: Callable[[], int] = time.perf_counter_ns
    for _ in range(repeat):
        for text, status, provider in inputs:
            start = clock()
            classify(text, status=status, provider=provider)
            samples.append((clock() - start) / 1000.0)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]
    codes = sorted({row["code"] for row in rows})
    pairs = [
        (row["code"], classify(row["text"], status=row["status"], provider=row["provider"]).code)
        for row in rows
    ]
    text_only = sum(classify(row["text"]).code == row["code"] for row in rows) / len(rows)

    print(f"## Accuracy on tests/data/llm_errors.jsonl ({len(rows)} messages)\n")
    print("| code | n | precision | recall | F1 |")
    print("|---|---:|---:|---:|---:|")
    f1s = []
    for code in codes:
        tp = sum(g == code and p == code for g, p in pairs)
        fp = sum(g != code and p == code for g, p in pairs)
        fn = sum(g == code and p != code for g, p in pairs)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        print(f"| {code} | {tp + fn} | {precision:.3f} | {recall:.3f} | {f1:.3f} |")
    accuracy = sum(g == p for g, p in pairs) / len(pairs)
    print(f"| **macro** | {len(rows)} | | | **{sum(f1s) / len(f1s):.3f}** |\n")
    print(
        f"Accuracy {accuracy:.3f} with the status/provider hints; {text_only:.3f} from the text "
        "alone.\n"
    )

    corpus_inputs = [(r["text"], r["status"], r["provider"]) for r in rows]
    padded = [(pad_to_4kb(r["text"]), r["status"], r["provider"]) for r in rows]
    padded_right = sum(
        classify(t, status=s, provider=p).code == r["code"]
        for (t, s, p), r in zip(padded, rows, strict=True)
    ) / len(rows)
    patho = [(t, None, None) for t in PATHOLOGICAL]
    timings_us(corpus_inputs, 3)  # warm-up: compile the table, fill caches

    print(f"## Speed (µs per message, one core, Python {sys.version.split()[0]})\n")
    print("| input | messages | median | p99 | max |")
    print("|---|---:|---:|---:|---:|")
    for label, inputs, repeat in (
        ("corpus messages as they are", corpus_inputs, 50),
        ("corpus messages padded to 4 KB", padded, 20),
        ("pathological (100 KB runs, brace floods)", patho, 20),
    ):
        samples = timings_us(inputs, repeat)
        print(
            f"| {label} | {len(inputs)} | {statistics.median(samples):.1f} | "
            f"{pct(samples, 0.99):.1f} | {max(samples):.1f} |"
        )
    print(f"\nAccuracy on the 4 KB padded messages: {padded_right:.3f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
