"""`l2dsr:benchFault`, read: ACTION:WEB@Ns[-Ms] into a `Fault`, or the problems that name the fix.

Pure: the web names are the address plan's (web01, web02, ...), passed in.
"""

from __future__ import annotations

import re

from lab.spec import PROJECT, Fault, Problem

ACTIONS = {
    "stop-web": "nginx stopped on the web: its kernel refuses the connections the LB still sends it",
    "kill-web": "the web's VM paused: it answers nothing (no RST, no ARP), as a crashed host",
}
DEFAULT_DOWN_S = 10  # without -Ms, the web comes back this long after the fault
_FORM = re.compile(r"^(?P<action>[a-z-]+):(?P<web>[a-z0-9]+)@(?P<at>\d+)s(?:-(?P<restore>\d+)s)?$")
EXAMPLE = "stop-web:web02@5s-15s"


def read_fault(text: str, webs: list[str], seconds: int) -> tuple[Fault | None, list[Problem]]:
    """The fault of a run `seconds` long, or None when `text` is empty; every problem names the key and the fix."""
    text = text.strip()
    if not text:
        return None, []
    m = _FORM.match(text)
    if not m:
        return None, [Problem("benchFault", f"{text!r} is not ACTION:WEB@Ns or ACTION:WEB@Ns-Ms; e.g. {EXAMPLE}")]
    action, web, at = m["action"], m["web"], int(m["at"])
    restore = int(m["restore"]) if m["restore"] else at + DEFAULT_DOWN_S
    problems = []
    if action not in ACTIONS:
        problems.append(Problem("benchFault", f"{action!r} is not one of {', '.join(ACTIONS)}; e.g. {EXAMPLE}"))
    if web not in webs:
        shown = ", ".join(webs[:3]) + (f" ... {webs[-1]}" if len(webs) > 3 else "")
        problems.append(Problem("benchFault", f"{web!r} is not a web of this lab ({shown}); name one of them"))
    if at < 1:
        problems.append(
            Problem("benchFault", "the fault at 0 s leaves no time to see the web serve; start it at 1 s or later")
        )
    if restore <= at:
        problems.append(
            Problem("benchFault", f"the restore ({restore} s) is not after the fault ({at} s); give -Ms with M > {at}")
        )
    elif restore >= seconds:
        problems.append(
            Problem(
                "benchFault",
                f"the restore at {restore} s is not inside the fault run ({seconds} s), so the web's return would not "
                f"be seen; restore earlier, or raise {PROJECT}:benchFaultSeconds above {restore}",
            )
        )
    if problems:
        return None, problems
    return Fault(action, web, at, restore), []
