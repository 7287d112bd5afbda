"""The corpus card: what a pretraining corpus (:mod:`pipelines.corpus`) holds and owes.

``corpus_card.json`` (and ``corpus_card.md`` for people) beside a built corpus: images per
source, split, class and modality, duplicates dropped, licences and citations, the spec's
sha256 and the build settings. :func:`corpus_sources` reads it back for training's leak check.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from pipelines.cells import md_cell

__all__ = ["CARD_JSON", "CARD_MD", "SEP", "card_markdown", "corpus_sources", "make_card"]

CARD_JSON = "corpus_card.json"
CARD_MD = "corpus_card.md"
SEP = "/"  # between a source's name and its labels or ids: mednist/Hand


def make_card(spec, read, kept, stats, labels, channels, size, settings) -> dict:
    """corpus_card.json's content: per source (in the corpus or excluded) its images per split,
    class and modality, duplicates dropped, licence and citation; the rules the build applied."""
    sources = {}
    for r in read:
        name = r["spec"]["name"]
        st = stats.get(name, Counter())
        sources[name] = {
            "dataset": r["spec"]["dataset"],
            "data_dir": r["spec"]["data_dir"],
            "options": r["spec"].get("options") or {},
            "in_corpus": not r["excluded"],
            "source_channels": r["channels"],
            "images": int(st["images"]),
            "per_split": {k[6:]: v for k, v in st.items() if k.startswith("split:")},
            "per_class": {f"{name}{SEP}{k[6:]}": v for k, v in st.items() if k.startswith("class:")},
            "per_modality": {k[9:]: v for k, v in st.items() if k.startswith("modality:")},
            "test_rows_left_out": int(st["test_rows_left_out"]),
            "duplicates_dropped": {k[8:]: v for k, v in st.items() if k.startswith("dropped_")},
            "unreadable": int(st["unreadable"]),
            "licence": r["spec"].get("licence", "unspecified"),
            "citation": r["spec"].get("citation", "unspecified"),
        }
    modality = Counter()
    for s in sources.values():
        modality.update(s["per_modality"])
    return {
        "spec": spec["_path"],
        "spec_sha256": spec["_sha256"],
        "settings": settings,
        "image_size": list(size),
        "channels": channels,
        "channel_rule": "pipelines.preprocessing.to_channels: RGB -> grey by BT.601 luma; grey -> 3 by repetition",
        "dedup": "sha256 of the harmonised uint8 pixels; first copy in spec order kept; "
                 "images equal to any source's test image dropped",
        "objective": "one union label space (namespaced source/class), softmax masked to the image's source",
        "labels": labels,
        "images": sum(s["images"] for s in sources.values()),
        "duplicates_dropped": sum(sum(s["duplicates_dropped"].values()) for s in sources.values()),
        "per_modality": dict(modality),
        "excluded": settings["exclude"],
        "sources": sources,
    }


def card_markdown(card: dict) -> str:
    """corpus_card.md: the card for people (tables per source, class and modality; citations)."""
    lines = [
        f"# Corpus card: {card['images']} images, {len(card['labels'])} labels",
        "",
        f"Spec `{card['spec']}` (sha256 `{card['spec_sha256'][:16]}`), {card['image_size'][0]}x"
        f"{card['image_size'][1]} px, {card['channels']} channel(s); excluded: "
        f"{', '.join(card['excluded']) or 'none'}. Size on disk: {card.get('size_on_disk_bytes', 0) / 2**20:.1f} MiB.",
        "",
        f"- Channels: {card['channel_rule']}.",
        f"- Duplicates: {card['dedup']}; dropped {card['duplicates_dropped']}.",
        f"- Objective: {card['objective']}.",
        "- Official test splits never enter the corpus.",
        "",
        "| source | in corpus | images | train | val | test rows left out | duplicates dropped | licence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in card["sources"].items():
        lines.append(
            f"| {md_cell(name)} | {'yes' if s['in_corpus'] else 'no (excluded)'} | {s['images']} | "
            f"{s['per_split'].get('train', 0)} | {s['per_split'].get('val', 0)} | {s['test_rows_left_out']} | "
            f"{sum(s['duplicates_dropped'].values())} | {s['licence']} |"
        )
    lines += ["", "| class | images |", "|---|---|"]
    for s in card["sources"].values():
        lines += [f"| {md_cell(k)} | {v} |" for k, v in s["per_class"].items()]
    lines += ["", "| modality | images |", "|---|---|"]
    lines += [f"| {md_cell(k)} | {v} |" for k, v in card["per_modality"].items()]
    lines += ["", "## Citations", ""]
    lines += [f"- **{name}** ({s['licence']}): {s['citation']}" for name, s in card["sources"].items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ for training
def corpus_sources(cache) -> dict:
    """``{"sources": [...], "datasets": [(adapter, data_dir), ...], "card_sha256": ...}`` of a
    built corpus, or None when ``cache`` is not a corpus (used by the leak check)."""
    cache = Path(cache)
    if not (cache / CARD_JSON).is_file():
        return None
    text = (cache / CARD_JSON).read_text()
    card = json.loads(text)
    kept = {n: s for n, s in card["sources"].items() if s["in_corpus"]}
    return {
        "sources": sorted(kept),
        "datasets": [{"name": n, "dataset": s["dataset"], "data_dir": s["data_dir"],
                      "options": s.get("options") or {}} for n, s in kept.items()],
        "card_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
