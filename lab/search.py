"""`l2dsr:benchSearch` and its keys, read into the capacity search's settings, or the problems that
name the fix. Pure; what the search does with them is bench/capacity.py's."""

from __future__ import annotations

from typing import Any

from lab.spec import PROJECT, SEARCH_TESTS, Problem, SearchSpec


def read_search(
    raw: dict[str, Any], file_size_kib: int, builtin_image: bool
) -> tuple[SearchSpec | None, list[Problem]]:
    """The search's settings when `benchSearch` is on (None when off), and what is wrong with them."""
    if not raw["benchSearch"]:
        return None, []
    problems = []
    tests = tuple(raw["benchSearchTests"])
    unknown = [t for t in tests if t not in SEARCH_TESTS]
    if unknown or not tests:
        problems.append(
            Problem(
                "benchSearchTests", f"{', '.join(unknown) or 'nothing'}: name one or both of {', '.join(SEARCH_TESTS)}"
            )
        )
    sizes = tuple(raw["benchFileSizesKiB"]) or (file_size_kib,)
    if any(size < 1 for size in sizes) or len(set(sizes)) != len(sizes):
        problems.append(
            Problem("benchFileSizesKiB", f"{list(sizes)}: each size once, each 1 KiB or more; e.g. [1, 16, 128, 1024]")
        )
    if raw["benchSearchConfirmSeconds"] < raw["benchSearchTrialSeconds"]:
        problems.append(
            Problem(
                "benchSearchConfirmSeconds",
                f"{raw['benchSearchConfirmSeconds']} s is shorter than a trial ({raw['benchSearchTrialSeconds']} s), so "
                "it would confirm nothing; set it to benchSearchTrialSeconds or more",
            )
        )
    if not builtin_image:
        problems.append(
            Problem(
                "benchSearch",
                "the search's open-loop tool (vegeta) is built into the builtin image only; set "
                f"{PROJECT}:image to builtin, or benchSearch to false",
            )
        )
    return SearchSpec(
        tests=tests,
        file_sizes_kib=sizes,
        trial_s=raw["benchSearchTrialSeconds"],
        confirm_s=raw["benchSearchConfirmSeconds"],
        precision_pct=raw["benchSearchPrecisionPct"],
        max_trials=raw["benchSearchMaxTrials"],
        max_failed_ppm=raw["benchSearchMaxFailedPpm"],
        p99_ms=raw["benchSearchP99Ms"],
        start_rps=raw["benchSearchStartRps"],
    ), problems


def search_file(kib: int) -> str:
    """The file each web serves for the search at this response size (guest/render.py writes it)."""
    return f"file-{kib}k"
