"""Tarball sources: extracted once, safely (pipelines.archive), and read by the corpus builder."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipelines import archive, bounded
from pipelines.corpus import build_corpus
from pipelines.manifest import DataError


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (20, 20), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar, name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tarball(path, *, patients=8, per_patient=3, extra=()):
    """``set/<benign|malignant>/<patient>/<slice>.png``; ``extra``: (TarInfo, bytes) members."""
    with tarfile.open(path, "w:gz") as tar:
        seed = 0
        for cls in ("benign", "malignant"):
            for p in range(patients):
                for s in range(per_patient):
                    seed += 1
                    _add(tar, f"set/{cls}/P{cls[0]}{p}/{s}.png", _png(seed))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_extracted_once_then_reused_and_redone_when_the_archive_changes(tmp_path):
    tarball = write_tarball(tmp_path / "nodules.tar.gz")
    dest = archive.extract_once(tarball, tmp_path / "x")
    assert dest == tmp_path / "x" / "nodules"
    assert len(list(dest.rglob("*.png"))) == 48
    marker = (dest / archive.MARKER).stat().st_mtime_ns
    assert archive.extract_once(tarball, tmp_path / "x") == dest
    assert (dest / archive.MARKER).stat().st_mtime_ns == marker  # reused, not extracted again
    write_tarball(tarball, patients=2)
    archive.extract_once(tarball, tmp_path / "x")
    assert len(list(dest.rglob("*.png"))) == 12
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["nodules"]  # no temp folder left


def test_a_member_outside_the_archive_is_refused_and_nothing_is_extracted(tmp_path):
    evil = tarfile.TarInfo("set/../../evil.txt")
    evil.size = 4
    tarball = write_tarball(tmp_path / "evil.tar.gz", extra=[(evil, b"boom")])
    with pytest.raises(DataError, match="points outside the archive"):
        archive.extract_once(tarball, tmp_path / "x")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "x" / "evil").exists()
    assert list((tmp_path / "x").iterdir()) == []


def test_links_are_never_written_and_a_bomb_is_refused(tmp_path, monkeypatch):
    link = tarfile.TarInfo("set/benign/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    dest = archive.extract_once(write_tarball(tmp_path / "links.tar.gz", extra=[(link, None)]), tmp_path / "x")
    assert not (dest / "set" / "benign" / "link.png").exists()

    monkeypatch.setattr(bounded, "MAX_INFLATED_BYTES", 1000)
    monkeypatch.setattr(bounded, "INFLATE_RATIO", 1)
    with pytest.raises(DataError, match="decompression bomb"):
        archive.extract_once(write_tarball(tmp_path / "bomb.tar.gz"), tmp_path / "x")
    assert not (tmp_path / "x" / "bomb").exists()


def test_a_truncated_archive_is_one_sentence(tmp_path):
    tarball = write_tarball(tmp_path / "cut.tar.gz")
    tarball.write_bytes(tarball.read_bytes()[:300])
    with pytest.raises(DataError, match="truncated or corrupt"):
        archive.extract_once(tarball, tmp_path / "x")


def test_a_corpus_source_from_a_tarball_keeps_each_patient_in_one_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the extraction goes to ./data/extracted
    write_tarball(tmp_path / "nodules.tar.gz", patients=20)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"val_fraction": 0.3, "sources": [{
        "name": "nodules", "dataset": "folder", "archive": "nodules.tar.gz", "data_dir": "set",
        "options": {"patient_pattern": "^[^/]+/([^/]+)/"}, "max_images": 60,
        "licence": "CC BY 3.0", "citation": "test"}]}))
    build_corpus(spec, tmp_path / "corpus", image_size=16, progress=False)
    assert (tmp_path / "data" / "extracted" / "nodules" / "set" / "benign").is_dir()
    manifest = pd.read_csv(tmp_path / "corpus" / "manifest.csv")
    assert set(manifest["split"]) == {"train", "val"}
    assert (manifest["split"] == "train").sum() == 60  # max_images: a sample of the training rows
    splits_per_patient = manifest.groupby("patient_id")["split"].nunique()
    assert (splits_per_patient == 1).all()
    card = json.loads((tmp_path / "corpus" / "corpus_card.json").read_text())
    assert card["sources"]["nodules"]["images"] == len(manifest)
