"""Progress reporting: one signature everywhere, `Progress(stage, done, total)`, and `Ticker` to feed it."""

from __future__ import annotations

from collections.abc import Callable

#: called as work finishes: (stage name, units done so far, total units of that stage)
Progress = Callable[[str, int, int], None]


class Ticker:
    """Turns per-step counts into `Progress(stage, done, total)` calls (nothing when `progress` is None)."""

    def __init__(self, progress: Progress | None, stage: str, total: int) -> None:
        self.progress, self.stage, self.total, self.done = progress, stage, total, 0

    def __call__(self, k: int = 1) -> None:
        self.done += k
        if self.progress:
            self.progress(self.stage, self.done, self.total)
