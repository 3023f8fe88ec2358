"""The names coordd and coordctl both spell: task states, operation kinds, progress states.

A leaf, like supervisor's ``states.py``: it imports nothing, so the daemon's engine, its API
and the client can all take their strings from here without an import cycle, and
``coordctl`` can import it on every one-shot command for free. The daemon's own types are
built from these values (``coordd.engine.tasks.State``, ``coordd.engine.coordinator.KINDS``);
the client compares the JSON it receives with them.
"""

# typing.TYPE_CHECKING without importing typing; type checkers read it as True.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

#: coordd's version, also ``coordd.__version__``; ``coordctl --version`` prints it.
VERSION = "0.1.0"

# -- task states (docs/design.md §4) ----------------------------------------------------------

WAITING = "waiting"
RUNNING = "running"
FINISHED = "finished"
ERROR = "error"
CANCELED = "canceled"

STATES = (WAITING, RUNNING, FINISHED, ERROR, CANCELED)
INCOMPLETE = (WAITING, RUNNING)
ENDED = (FINISHED, ERROR, CANCELED)
#: ``task.list``'s state filter for every state, incomplete and ended.
ALL_STATES = "all"

# -- operation kinds (docs/design.md §2) ------------------------------------------------------

KINDS: "tuple[Literal['create'], Literal['read'], Literal['update'], Literal['delete']]" = (
    "create",
    "read",
    "update",
    "delete",
)

# -- content (coordd-api(7), "Versions and content") ------------------------------------------

#: The kinds of content unit, as ``repo.content`` filters them and version counts name them
#: (``coordd.content.units.KINDS``).
UNIT_KINDS = ("rpm", "erratum", "delta", "file", "metadata")
#: The most a page of ``repo.versions.list``, ``repo.versions.diff``, ``repo.content`` or
#: ``content.orphans.list`` holds (``coordd.content.versions.MAX_PAGE``).
MAX_PAGE = 1000
#: The resource every operation that adds content reads and orphan removal updates.
POOL_TYPE = "content"
POOL_ID = "pool"

# -- states of a step in a progress report (docs/design.md §6) --------------------------------

STEP_NOT_STARTED = "NOT_STARTED"
STEP_IN_PROGRESS = "IN_PROGRESS"
STEP_FINISHED = "FINISHED"
STEP_FAILED = "FAILED"
STEP_SKIPPED = "SKIPPED"
STEP_CANCELED = "CANCELED"
