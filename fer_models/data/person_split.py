"""Partitioning by person: under ``privacy-unit = person`` every person sits at exactly one client.

A client's person-level epsilon protects a person only against what *that client* releases. If
one person's images sat at two clients, both clients' updates would depend on that person and
the guarantees compose (epsilon 3.99 at each of 2 clients is 5.95 for the person). So under
``privacy-unit = person`` the partitioners split *persons*, not images (:func:`person_units`):
every person becomes one indivisible unit whose label is its samples' majority label (ties go to
the lowest class index) and, for ``partition=group``, whose group is its samples' one group.
Samples without a subject id are persons of their own (as :mod:`fer_models.data.person_index` counts them).

A split that would put one person at two clients is refused with :class:`PersonSplitError`,
naming the subject id, the clients and what to do; :func:`check_one_client_per_person` checks
any holdings (the clients' partitions, or sites' data when one party sees them all).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from fer_models.data.partition import PartitionError

logger = logging.getLogger(__name__)

_SHOWN = 5  # subject ids listed in a message
#: What to do when sites share a subject id (for a party that sees several sites, e.g. a simulation's operator).
SITE_ADVICE = ("keep each person's images at one site only (remove them from the others), or, if the shared id "
               "names different people, make the ids distinct (e.g. prefix them with the site name)")


class PersonSplitError(PartitionError):
    """A partition that would put one person (subject id) at more than one client."""


@dataclass(frozen=True)
class PersonUnits:
    """The persons of a pool, in the order of their first sample.

    ``unit[i]`` is the person of pool position ``i``; person ``p`` has label ``labels[p]``
    (majority), group ``groups[p]`` (None without groups) and name ``names[p]`` (its subject id,
    or ``#sample<i>`` for a sample without one, ``i`` = its first pool position).
    """

    unit: np.ndarray  # int64 (pool,)
    labels: np.ndarray  # int64 (persons,)
    groups: np.ndarray | None  # (persons,)
    names: np.ndarray  # str (persons,)

    def __len__(self) -> int:
        return int(self.labels.size)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(str(n)) for n in list(names)[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def person_units(*, subjects: np.ndarray | None, unit: np.ndarray, labels: np.ndarray,
                 groups: np.ndarray | None = None, num_clients: int) -> PersonUnits:
    """Merge a pool's samples (``unit``: sample id per pool position, ``labels``/``groups`` per sample)
    into persons by ``subjects`` (subject id per pool position; empty or None = no id).

    Raises :class:`PersonSplitError` when a sample (a real sequence) holds two persons, when a person
    has samples in two groups (``groups`` given, i.e. ``partition=group``), or when there are fewer
    persons than ``num_clients`` (some client would need part of a person).
    """
    unit = np.asarray(unit, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n_units = labels.size
    subj = np.full(unit.size, "") if subjects is None else np.asarray(subjects).astype(str)
    if subj.shape != unit.shape or (unit.size and (unit.min() < 0 or unit.max() >= n_units)):
        raise ValueError(f"subjects {subj.shape} and unit {unit.shape} must be per pool position, "
                         f"unit ids in 0..{n_units - 1}")
    has_id = subj != ""
    ids, code = np.unique(subj[has_id], return_inverse=True)
    person = np.empty(unit.size, np.int64)
    person[has_id] = code
    person[~has_id] = ids.size + unit[~has_id]  # a sample without a subject id: a person of its own
    of_unit = np.full(n_units, -1, np.int64)
    of_unit[unit] = person
    mixed = np.flatnonzero(of_unit[unit] != person)
    if mixed.size:
        both = sorted({str(s) or "(no id)" for s in subj[unit == unit[mixed[0]]]})
        raise PersonSplitError(f"privacy-unit=person: one sample (a sequence) holds images of subjects "
                               f"{_listed(both)}; every image of a sequence must carry its one subject id "
                               f"(fix the manifest's subject/sequence columns)")
    # persons in the order of their first pool position: without any subject id this is the unit order
    _, first, inverse = np.unique(person, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    person_of_unit = rank[inverse][np.unique(unit, return_index=True)[1]]  # per unit, units 0..U-1
    n_persons = first.size
    votes = np.zeros((n_persons, int(labels.max(initial=0)) + 1), np.int64)
    np.add.at(votes, (person_of_unit, labels), 1)
    firsts = np.sort(first)
    names = np.where(has_id[firsts], subj[firsts], np.char.add("#sample", firsts.astype(str)))
    if n_persons < num_clients:
        raise PersonSplitError(
            f"privacy-unit=person: the training data holds {n_persons} person(s) ({_listed(names)}) for "
            f"{num_clients} clients; giving every client data would split a person over clients, and its "
            f"epsilon would compose over them: use at most {n_persons} clients (num-clients), more persons, "
            f"or privacy-unit=sample")
    person_groups = None
    if groups is not None:
        groups = np.asarray(groups)
        person_groups = np.empty(n_persons, dtype=groups.dtype)
        person_groups[person_of_unit] = groups
        astray = np.flatnonzero(person_groups[person_of_unit] != groups)
        if astray.size:
            p = int(person_of_unit[astray[0]])
            where = sorted(set(groups[person_of_unit == p].astype(str)))
            raise PersonSplitError(
                f"privacy-unit=person: person {str(names[p])!r} has samples in groups {_listed(where)}; "
                f"partition=group gives each group its own clients, so this person would sit at clients of "
                f"each of these groups and its epsilon would compose over them: give each subject id one group "
                f"(the manifest's group/subject columns), or use another partitioner")
    logger.info("privacy-unit=person: partitioning %d persons (%d samples; %d persons without a subject id)",
                n_persons, n_units, n_persons - ids.size)
    return PersonUnits(unit=person_of_unit[unit], labels=np.argmax(votes, axis=1).astype(np.int64),
                       groups=person_groups, names=names)


def in_persons(text: str) -> str:
    """A partitioner's message, reworded for person units (its counts of "samples" count persons)."""
    return re.sub(r"(?<![-\w])samples\b", "persons", text) + " (privacy-unit=person splits persons, not images)"


def check_one_client_per_person(*, holdings: Mapping[str, np.ndarray], advice: str) -> None:
    """Refuse holdings (client name -> subject id of each of its samples) that put one subject id
    at two clients; empty ids are persons of their own and never shared. ``advice`` says what to do."""
    where: dict[str, list[str]] = {}
    for client, subjects in holdings.items():
        for s in np.unique(np.asarray(subjects).astype(str)):
            if s:
                where.setdefault(str(s), []).append(str(client))
    shared = sorted(s for s, clients in where.items() if len(clients) > 1)
    if shared:
        first = shared[0]
        more = f" ({len(shared)} subject ids are shared: {_listed(shared)})" if len(shared) > 1 else ""
        raise PersonSplitError(
            f"privacy-unit=person: person {first!r} sits at {', '.join(where[first])}{more}; each of them "
            f"reports an epsilon for its own updates only, so this person's epsilon would be their composition: "
            f"{advice}")


__all__ = ["SITE_ADVICE", "PersonSplitError", "PersonUnits", "check_one_client_per_person", "in_persons",
           "person_units"]
