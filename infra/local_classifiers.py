"""The registry of local classifiers: the built-in ones and any a pip package provides.

A package provides one by declaring an entry point in the group
:data:`ENTRY_POINT_GROUP` that names a zero-argument factory (or class) returning a
`contracts.local_classifier.LocalClassifier`:

    [project.entry-points."provenroute.local_classifiers"]
    my-classifier = "my_package.module:MyClassifier"

Entry points are read once, on first use (never at import time), and nothing is downloaded:
a classifier ships with its package.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from typing import Final

from contracts.local_classifier import LOCAL_PREFIX, KeywordHeuristic, LocalClassifier

ENTRY_POINT_GROUP: Final = "provenroute.local_classifiers"
BUILT_IN: Final[tuple[LocalClassifier, ...]] = (KeywordHeuristic(),)

log = logging.getLogger("provenroute.local_classifiers")


class UnknownLocalClassifier(LookupError):
    pass


@cache
def registry() -> dict[str, LocalClassifier]:
    """Every local classifier by name: built-ins first, then entry points (a broken or
    misnamed plug-in is logged and left out, never fatal)."""
    found: dict[str, LocalClassifier] = {c.name: c for c in BUILT_IN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            classifier = ep.load()()
            name = classifier.name
        except Exception as e:
            log.warning("local classifier %s could not be loaded: %r", ep.name, e)
            continue
        if not name.startswith(LOCAL_PREFIX) or name in found:
            log.warning("local classifier %s ignored: name %r", ep.value, name)
            continue
        found[name] = classifier
    return found


def local_classifier(model: str) -> LocalClassifier:
    """The registered local classifier called `model`; UnknownLocalClassifier otherwise."""
    try:
        return registry()[model]
    except KeyError:
        known = ", ".join(sorted(registry()))
        raise UnknownLocalClassifier(
            f"no local classifier {model!r} (registered: {known})"
        ) from None
