"""Variations: the `n` images of one call, each its own request, row and seed, sharing a batch id.

With a seed s the images take s, s + 1, ... (wrapping past the model's largest seed to its smallest);
without one, random seeds (each recorded in its row's parameters, so any image can be repeated). One
image (`n` 1) keeps the call exactly as it was: the default seed when none is given.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import replace

from app.core.requests import GenerationRequest, RequestProblem
from app.storage.records import Generation

MAX_VARIATIONS = 4


def new_batch_id() -> str:
    """A batch's id: short, random, and never a row id (so it is never mistaken for one)."""
    return "b" + secrets.token_hex(6)


def variations(request: GenerationRequest, n: int, seed_given: bool) -> list[GenerationRequest]:
    """The request of each image: `request` itself when `n` is 1, else one per seed.

    Raises RequestProblem for `n` > 1 on a model that takes no seed (its images would not differ by one)."""
    if n == 1:
        return [request]
    arg = request.endpoint.args.get("seed")
    if arg is None or arg.limit is None:
        raise RequestProblem([f"{request.model} takes no seed, so `n` must be 1 for it"])
    low, high = int(arg.limit.minimum), int(arg.limit.maximum)
    base = request.values.get("seed")
    if seed_given and isinstance(base, int):
        seeds = [low + (base - low + k) % (high - low + 1) for k in range(n)]
    else:
        seeds = [low + secrets.randbelow(high - low + 1) for _ in range(n)]
    return [replace(request, values={**request.values, "seed": seed}) for seed in seeds]


def seeds_text(requests: list[GenerationRequest], seed_given: bool) -> str:
    """The seeds of a batch, for its answer: `seeds 7, 8, 9` or `random seeds 123, 456`."""
    seeds = ", ".join(str(request.values.get("seed")) for request in requests)
    return f"seeds {seeds}" if seed_given else f"random seeds {seeds}"


def grouped(gens: Iterable[Generation]) -> list[list[Generation]]:
    """The rows with each batch gathered where its first row appears (a row of no batch on its own)."""
    groups: list[list[Generation]] = []
    where: dict[str, list[Generation]] = {}
    for gen in gens:
        if gen.batch_id is None:
            groups.append([gen])
        elif gen.batch_id in where:
            where[gen.batch_id].append(gen)
        else:
            where[gen.batch_id] = [gen]
            groups.append(where[gen.batch_id])
    return groups
