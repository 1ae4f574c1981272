"""Ray errors as one line for the user."""

from __future__ import annotations

import re


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


_RAISED = re.compile(r"^([A-Za-z_][\w.]*): (.+)$")


def raised(exc) -> str:
    """Why an actor died while starting, as one line. An exception in its constructor ends Ray's
    text: stpipe's own errors by their message, others as `Type: message`. A crash (killed, lost
    node): Ray's own reason, the first line after the header and the actor's indented identity."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    match = _RAISED.match(lines[-1])
    if exc.actor_init_failed and match is not None:
        kind, message = match.groups()
        return (message if kind.startswith("pipeline.errors.") else f"{kind.rpartition('.')[2]}: {message}")[:300]
    reason = next((line for line in text.splitlines()[1:] if line.strip() and not line.startswith("\t")), lines[0])
    return reason.strip().split(" Some common causes")[0][:300]
