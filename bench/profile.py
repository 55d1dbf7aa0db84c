"""Read a py-spy ``--format raw`` profile (collapsed stacks) and rank where the samples went.

Each line is ``thread (tid): name;frame;frame;... count`` (with ``--threads``) and each frame is
``function (path:line)``. Functions are keyed ``path:function`` without the line, so a function counts
once per sample however many of its lines were on the stack.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\w+\): ?(?P<name>.*)$")
_ENTRY = "lockgate/cli/"  # the command that started the server: on every stack, says nothing


@dataclass
class Profile:
    samples: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def share(self, count: int) -> float:
        return 100.0 * count / self.samples if self.samples else 0.0

    def top(self, counter: Counter[str], n: int, prefix: str = "") -> list[dict[str, Any]]:
        ranked = [
            (k, c) for k, c in counter.most_common() if k.startswith(prefix) and not k.startswith(_ENTRY)
        ][:n]
        return [{"function": k, "samples": c, "percent": round(self.share(c), 1)} for k, c in ranked]

    def to_json(self, n: int = 15) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "threads": {k: round(self.share(c), 1) for k, c in self.threads.most_common()},
            "top_self": self.top(self.self_time, n),
            "top_lockgate_inclusive": self.top(self.inclusive, n, "lockgate/"),
            "top_lockgate_self": self.top(self.self_time, n, "lockgate/"),
        }


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['path']}:{match['func']}"


def parse_raw(text: str) -> Profile:
    profile = Profile()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = _THREAD.match(frames[0])
        if thread is not None:
            frames = frames[1:]
        if not frames:
            continue
        profile.threads[thread["name"] if thread is not None else "(all)"] += count
        functions = [_function(f) for f in frames]
        profile.samples += count
        profile.self_time[functions[-1]] += count
        for function in set(functions):
            profile.inclusive[function] += count
    return profile


def load_raw(path: Path) -> Profile:
    return parse_raw(path.read_text(encoding="utf-8", errors="replace"))
