"""Checks every reader of COCO ground truth shares (training, ``detect doctor``, evaluation).

No TensorFlow here: ``detect evaluate`` on a results file runs without it.
"""

from __future__ import annotations

from collections import Counter


class DataError(ValueError):
    """A dataset that cannot be used as it is (the message lists why)."""


def check_ground_truth(data: dict, source) -> list[tuple[str, str]]:
    """Checks every reader of COCO ground truth shares (training, doctor, evaluate).

    Raises :class:`DataError` for what would silently change results: an
    ``iscrowd`` that is not 0 or 1 (``"0"``, a string, is truthy: every
    object would become a crowd region). Returns ``(kind, message)``
    warnings (kinds in :data:`detect.datasets.coco.PROBLEM_KINDS`): no annotations, annotation ids
    used more than once, two category ids sharing a name.
    """
    bad = [a for a in data["annotations"] if a.get("iscrowd", 0) not in (0, 1)]  # True/False are 1/0
    if bad:
        a = bad[0]
        raise DataError(f"{source}: {len(bad)} annotation(s) have an iscrowd that is not 0 or 1, e.g. annotation "
                        f"{a.get('id')}: iscrowd {a.get('iscrowd')!r} ({type(a.get('iscrowd')).__name__}); "
                        f"write the number 0 (an object) or 1 (a crowd region)")
    warnings = []
    if not data["annotations"]:
        warnings.append(("no_annotations", f"{source}: holds no annotations: every image is a negative, "
                                           f"and AP is undefined (-1)"))
    ids = Counter(a.get("id") for a in data["annotations"])
    repeated = {i: n for i, n in ids.items() if n > 1}
    if repeated:
        shown = ", ".join(f"{i} ({n}x)" for i, n in list(repeated.items())[:5])
        warnings.append(("duplicate_annotation_id",
                         f"{source}: {sum(repeated.values())} annotations share {len(repeated)} id(s): {shown}; "
                         f"all are kept, but tools that key annotations by id keep one of each"))
    names: dict[str, list] = {}
    for c in data["categories"]:
        names.setdefault(str(c.get("name", c.get("id"))), []).append(c.get("id"))
    for name, cat_ids in names.items():
        if len(cat_ids) > 1:
            warnings.append(("duplicate_category_name",
                             f"{source}: categories {', '.join(map(str, cat_ids))} are all named {name!r}: the "
                             f"model's outputs cannot tell them apart; rename or merge them"))
    return warnings
