"""Routing state the rules read and advance: the round-robin pointer per team and open-ticket counts per agent.

The store implements `RoutingState` inside the ticket-filing transaction; `InMemoryRoutingState` is the same
contract kept in memory (for `mailgate rules test` and tests). Round-robin is fully determined by the persisted
"last assigned agent per team": `next_after(last, candidates)` walks the candidates in alphabetical order of
agent name, so it resumes correctly after a restart and when agents join, leave or go away.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol


class RoutingState(Protocol):
    """What `decide` needs from the store to assign fairly."""

    def next_in_rotation(self, team: str, candidates: list[str]) -> str:
        """Pick the next agent of `team` among `candidates` (non-empty) and remember it as the team's last."""
        ...

    def open_ticket_counts(self, agents: list[str]) -> dict[str, int]:
        """Open tickets assigned to each of these agents (0 when none)."""
        ...


def next_after(last: str | None, candidates: Iterable[str]) -> str:
    """The candidate following `last` in alphabetical order, wrapping around; the first one when `last` is None.

    `last` need not be a candidate (an agent now away or removed): the rotation continues after its place.
    """
    ring = sorted(set(candidates))
    if not ring:
        raise ValueError("no candidates to rotate through")
    if last is None:
        return ring[0]
    return next((name for name in ring if name > last), ring[0])


class InMemoryRoutingState:
    """A RoutingState in memory: seed it with the last assigned agent per team and open counts to resume."""

    def __init__(self, last_assigned: Mapping[str, str] | None = None, open_counts: Mapping[str, int] | None = None):
        self.last_assigned: dict[str, str] = dict(last_assigned or {})
        self.open_counts: dict[str, int] = dict(open_counts or {})

    def next_in_rotation(self, team: str, candidates: list[str]) -> str:
        pick = next_after(self.last_assigned.get(team), candidates)
        self.last_assigned[team] = pick
        return pick

    def open_ticket_counts(self, agents: list[str]) -> dict[str, int]:
        return {a: self.open_counts.get(a, 0) for a in agents}

    def record_assignment(self, agent: str | None) -> None:
        """Count one more open ticket for `agent` (what filing a ticket does in the store)."""
        if agent:
            self.open_counts[agent] = self.open_counts.get(agent, 0) + 1
