"""Regenerate the measured-results tables of docs/RESULTS.md from the benchmark result files.

    python scripts/results_tables.py           # rewrite docs/RESULTS.md between the markers
    python scripts/results_tables.py --check   # exit 1 if docs/RESULTS.md's tables are stale

The explanation table sits between ``<!-- explain:start -->`` and ``<!-- explain:end -->``
(the ablation table between ``ablations:`` markers, the transfer study between ``transfer:``
markers, the input-speed table between ``speed:`` markers, the MedMNIST table between ``medmnist:``
markers, from
``benchmarks/results/ablations.json``, ``transfer/transfer.json``, ``pipeline-*.json`` and ``medmnist.json``); everything
outside the markers is left alone. Figures come only from
``benchmarks/results/explain-*.json`` (read by :func:`zoo.results.load_results`): the
default-configuration runs of ``python -m benchmarks.explain`` on the head-CT phantom, one column
value per seed. To change a figure, rerun the benchmark (it rewrites its result file) and then
this script. ``python scripts/model_table.py`` keeps the README's models table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_table import replace_section as _replace_section  # noqa: E402  (one section writer)
from model_table import sync_readme  # noqa: E402

RESULTS = ROOT / "docs" / "RESULTS.md"
START, END = "<!-- explain:start -->", "<!-- explain:end -->"
ABL_START, ABL_END = "<!-- ablations:start -->", "<!-- ablations:end -->"
MODELS = ("ichnet", "rensenet")
# (column title, which row of a result file, bold)
COLUMNS = (
    ("Grad-CAM on `features`",
     lambda r: r["method"] == "gradcam" and r["layer"].startswith("features"), False),
    ("Grad-CAM, every scale",
     lambda r: r["method"] == "gradcam" and r.get("scales", 1) > 1, False),
    ("LayerCAM, every scale",
     lambda r: r["method"] == "layercam" and r.get("scales", 1) > 1
     and r.get("fusion") == "product", True),
)


def explain_records(folder=None) -> list[dict]:
    """The default-configuration head-CT result files of benchmarks.explain for ``MODELS``."""
    from zoo.results import load_results

    return [r for r in load_results("explain", folder)
            if r.get("phantom") == "head CT" and not r.get("variant") and r["model"] in MODELS]


def _value(rec: dict | None, pick) -> float | None:
    if rec is None:
        return None
    hits = [r["hit_rate"] for r in rec["rows"] if pick(r)]
    return hits[0] if hits else None


def _cell(values, bold=False) -> str:
    text = " / ".join("-" if v is None else f"{v:.3f}" for v in values)
    return f"**{text}**" if bold else text


def render_explain_table(records: list[dict] | None = None) -> str:
    """The Markdown table that belongs between the explain markers."""
    records = explain_records() if records is None else records
    if not records:
        raise ValueError("no default-configuration head-CT result files of benchmarks.explain "
                         "in benchmarks/results; run `python -m benchmarks.explain --no-kidney`.")
    seeds = sorted({r["seed"] for r in records})
    sizes = sorted({r["config"]["size"] for r in records})
    epochs = sorted({r["config"]["epochs"] for r in records})
    setting = (f"{'/'.join(map(str, sizes))} px, {'/'.join(map(str, epochs))} epochs")
    seed_text = ("seed " if len(seeds) == 1 else "seeds ") + " / ".join(map(str, seeds))
    lines = [
        f"| model ({setting}), {seed_text} | "
        + " | ".join(title for title, _, _ in COLUMNS) + " | val AUROC (any) |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    by = {(r["model"], r["seed"]): r for r in records}
    for model in [m for m in MODELS if any(r["model"] == m for r in records)]:
        recs = [by.get((model, s)) for s in seeds]
        cells = [_cell([_value(rec, pick) for rec in recs], bold) for _, pick, bold in COLUMNS]
        cells.append(_cell([None if rec is None else rec["val_auroc"] for rec in recs]))
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_section(text: str, table: str, start: str = START, end: str = END) -> str:
    """``text`` with the explain section (or another ``start``/``end`` one) set to ``table``."""
    return _replace_section(text, table, start, end)


def render_ablation_table(folder=None) -> str:
    """docs/RESULTS.md's "Do the paper blocks help?" table, from ``benchmarks/results/ablations.json``."""
    import json

    from benchmarks.ablations import markdown

    folder = Path(folder) if folder else ROOT / "benchmarks" / "results"
    record = json.loads((folder / "ablations.json").read_text())
    return f"Command: `{record['command']}`\n\n" + markdown(record["rows"])


TRANSFER_START, TRANSFER_END = "<!-- transfer:start -->", "<!-- transfer:end -->"


def render_transfer_table(folder=None) -> str:
    """The transfer study's table and targets, from ``benchmarks/results/transfer/transfer.json``."""
    import json

    from benchmarks.transfer import markdown

    folder = Path(folder) if folder else ROOT / "benchmarks" / "results" / "transfer"
    record = json.loads((folder / "transfer.json").read_text())
    return markdown(record["summary"], record["command"]).rstrip("\n")


MEDMNIST_START, MEDMNIST_END = "<!-- medmnist:start -->", "<!-- medmnist:end -->"


def render_medmnist_table(folder=None) -> str:
    """The MedMNIST v2 table and its verdicts, from ``benchmarks/results/medmnist.json``."""
    import json

    from benchmarks.medmnist import table, verdict_lines

    folder = Path(folder) if folder else ROOT / "benchmarks" / "results"
    record = json.loads((folder / "medmnist.json").read_text())
    return (table(record) + "\n" + "\n".join(verdict_lines(record))).rstrip("\n")


MEDICAL_START, MEDICAL_END = "<!-- medical:start -->", "<!-- medical:end -->"


def render_medical_table(folder=None) -> str:
    """The shipped medical backbones (``weights.json``) and the transfer comparison
    (``medical-transfer.json``, a benchmarks.medmnist result with scratch and medical starts)."""
    import json

    from benchmarks.medmnist import table, transfer_lines

    folder = Path(folder) if folder else ROOT / "benchmarks" / "results"
    shipped = json.loads((folder / "weights.json").read_text())
    lines = ["| backbone file | KiB | stored as | best epoch / epochs run | corpus val mean AUROC | val loss | "
             "sha256 (first 16) |", "|---|---:|---|---|---:|---:|---|"]
    for r in shipped["rows"]:
        lines.append(f"| `{r['file']}` | {r['kib']:.0f} | {r.get('stored_dtype', 'float32')} | "
                     f"{r['best_epoch']} / {r['epochs_run']}{'' if r['stopped_early'] else ' (ceiling)'} | "
                     f"{r['corpus_val_auroc']:.4f} | {r['corpus_val_loss']:.4f} | `{r['sha256'][:16]}` |")
    lines += ["", f"command: `{shipped['command']}`", ""]
    record = json.loads((folder / "medical-transfer.json").read_text())
    return ("\n".join(lines) + "\n" + table(record) + "\n" + "\n".join(transfer_lines(record))).rstrip("\n")


SPEED_START, SPEED_END = "<!-- speed:start -->", "<!-- speed:end -->"
# (row title, key of a pipeline result file, format, key of the load beside it)
SPEED_ROWS = (
    ("DICOM decode + HU + 3 windows / bare pydicom (`decode_vs_pydicom`; target >= 0.8)",
     "decode_vs_pydicom", "{:.2f}", "load_decode"),
    ("DICOM decode + HU + 3 windows, slices/s (512x512 int16)", "decode_slices_per_sec", "{:,.0f}", None),
    ("bare pydicom dcmread + pixel_array, slices/s", "pydicom_slices_per_sec", "{:,.0f}", None),
    ("NIfTI slice + 3 windows / bare nibabel (`decode_nifti_vs_nibabel`; target >= 0.8)",
     "decode_nifti_vs_nibabel", "{:.2f}", "load_decode_nifti"),
    ("prepare, 2 workers / 1 worker, once up (`prepare_scaling_2_workers`; target >= 1.7 idle)",
     "prepare_scaling_2_workers", "{:.2f}", None),
    ("prepare, 2 workers / 1 worker, whole run (start-up included)",
     "prepare_scaling_2_workers_whole_run", "{:.2f}", None),
    ("tf.data read + decode + batch + prefetch, images/s at 256 px (`input_images_per_sec_256`; "
     "target >= 1,500)", "input_images_per_sec_256", "{:,.0f}", "load_tfdata"),
    ("Keras augmentation layers in a tf.function on the device (here: the CPU), images/s",
     "device_augment_images_per_sec_256", "{:,.0f}", None),
    ("tf.data with augmentation in the map (`--augment-on cpu`), images/s",
     "cpu_path_augmented_images_per_sec_256", "{:,.0f}", None),
    ("ichnet training step, images/s at 256 px", "ichnet_train_images_per_sec_256", "{:,.1f}", None),
)


def render_speed_table(folder=None) -> str:
    """The input-speed table: one column per ``benchmarks/results/pipeline-*.json``."""
    from zoo.results import load_results

    records = load_results("pipeline", folder)
    if not records:
        return "No pipeline result file yet: run `python -m benchmarks.pipeline --json " \
               "benchmarks/results/pipeline-<label>.json`."
    head = " | ".join(f"`{r['file'][:-5]}` ({r['date']})" for r in records)
    lines = [f"| figure | {head} |", "|---|" + "---:|" * len(records)]
    for title, key, fmt, load_key in SPEED_ROWS:
        cells = []
        for rec in records:
            value = rec.get(key)
            cell = "-" if value is None else fmt.format(value)
            if value is not None and load_key and rec.get(load_key) is not None:
                cell += f" (load {rec[load_key]:.1f})"
            cells.append(cell)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    machine = "; ".join(dict.fromkeys(f"`{r['file'][:-5]}` on {r['machine']}" for r in records))
    commands = "\n".join(r["command"] for r in records)
    return "\n".join(lines) + f"\n\n{machine}, from:\n\n```bash\n{commands}\n```"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/RESULTS.md's tables are stale")
    parser.add_argument("--doc", type=Path, default=RESULTS,
                        help="the Markdown file holding the sections (default docs/RESULTS.md)")
    args = parser.parse_args(argv)
    text = args.doc.read_text()
    new = replace_section(text, render_explain_table())
    if ABL_START in new:
        new = replace_section(new, render_ablation_table(), ABL_START, ABL_END)
    if TRANSFER_START in new:
        new = replace_section(new, render_transfer_table(), TRANSFER_START, TRANSFER_END)
    if SPEED_START in new:
        new = replace_section(new, render_speed_table(), SPEED_START, SPEED_END)
    if MEDMNIST_START in new:
        new = replace_section(new, render_medmnist_table(), MEDMNIST_START, MEDMNIST_END)
    if MEDICAL_START in new:
        new = replace_section(new, render_medical_table(), MEDICAL_START, MEDICAL_END)
    return sync_readme(args.doc, text, new, check=args.check, what="results table",
                       command="python scripts/results_tables.py")


if __name__ == "__main__":
    sys.exit(main())
