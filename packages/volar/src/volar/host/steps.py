"""One thing `volar setup` (or its teardown) does: a :class:`Step`, planned from facts and run
by the command. A step that is already satisfied is planned as DONE, so running setup again
does only what is missing.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StepKind(enum.StrEnum):
    RUN = "run"  # run `command` (with `content` on its stdin when there is some)
    WRITE = "write"  # write `content` to `path`
    REMOVE = "remove"  # remove the file at `path` (if it is there)
    DONE = "done"  # already satisfied: nothing to do
    SKIP = "skip"  # not applicable here (the note says why)
    BLOCKED = "blocked"  # cannot be done (the note says what to do)


@dataclass(frozen=True)
class Step:
    kind: StepKind
    title: str
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    content: str = ""
    needs_root: bool = False
    note: str = ""

    @property
    def pending(self) -> bool:
        return self.kind in (StepKind.RUN, StepKind.WRITE, StepKind.REMOVE)

    def shell(self) -> str:
        """The step as one shell command (a heredoc for a file, or for a command's stdin)."""
        if self.kind is StepKind.RUN:
            prefix = [f"{key}={shlex.quote(value)}" for key, value in self.env.items()]
            line = " ".join([*prefix, shlex.join(self.command)])
            return f"{line} <<'EOF'\n{self.content}EOF" if self.content else line
        if self.kind is StepKind.WRITE:
            return f"cat > {shlex.quote(str(self.path))} <<'EOF'\n{self.content}EOF"
        if self.kind is StepKind.REMOVE:
            return f"rm -f {shlex.quote(str(self.path))}"
        return f"# {self.title}: {self.note}"


def root_steps(steps: Sequence[Step]) -> list[Step]:
    return [step for step in steps if step.pending and step.needs_root]
