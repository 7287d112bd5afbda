"""Why did rensenet reach only ~0.7 val AUROC on the kidney-stone phantom in 10 epochs?

    python -m benchmarks.kidney_probe [--size 64] [--model rensenet_small]

Same generator as ``write_kidney_stones`` (stones 2-5 px, aortic calcifications, 75/25 split),
trained with plain Adam and no augmentation. Two runs separate "training too short" from "too
little data / task too hard": (a) the benchmark's 320 images for 3x the epochs, with train and
val AUROC after every epoch; (b) 4x the images for the benchmark's 10 epochs. Writes
``benchmarks/results/probe-kidney-stones.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def kidney_arrays(n, size, seed):
    from pipelines import phantoms

    is_stone = np.zeros(n, bool)
    is_stone[np.random.default_rng([seed, 1]).permutation(n)[: n // 2]] = True
    x = np.zeros((n, size, size, 1), np.float32)
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.default_rng(child)
        count = int(rng.integers(1, 4)) if is_stone[i] else 0
        hu, _ = phantoms.render_abdomen_slice(rng, size, stones=count, stone_size=(2, 5))
        x[i, ..., 0] = np.rint(np.clip((hu + 160.0) / 400.0, 0, 1) * 255) / 255
    return x, is_stone.astype(int)


def curve(model_name, n, size, epochs, seed=0):
    import keras

    import zoo
    from zoo.metrics import auroc

    x, y = kidney_arrays(n, size, seed)
    cut = int(n * 0.75)
    keras.utils.set_random_seed(seed)
    model = zoo.get_model(model_name, input_shape=(size, size, 1))
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="categorical_crossentropy")
    yy = keras.utils.to_categorical(y, 2)
    rows = []
    for epoch in range(1, epochs + 1):
        model.fit(x[:cut], yy[:cut], batch_size=32, epochs=1, verbose=0, shuffle=True)
        tr = auroc(y[:cut], model.predict(x[:cut], verbose=0)[:, 1])
        va = auroc(y[cut:], model.predict(x[cut:], verbose=0)[:, 1])
        rows.append({"epoch": epoch, "train_auroc": float(tr), "val_auroc": float(va)})
        print(f"n={n} epoch {epoch}: train AUROC {tr:.3f}, val AUROC {va:.3f}", flush=True)
    return rows


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(prog="python -m benchmarks.kidney_probe")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--model", default="rensenet_small")
    p.add_argument("--n", type=int, default=320)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", type=Path,
                   default=Path(__file__).resolve().parent / "results" / "probe-kidney-stones.json")
    a = p.parse_args(argv)
    t0 = time.time()
    from zoo.results import software

    command = "python -m benchmarks.kidney_probe"
    record = {"benchmark": "probe", "model": a.model, "phantom": "kidney stones", "seed": 0,
              "size": a.size, "command": command, "date": time.strftime("%Y-%m-%d"),
              "software": software(), "source": f"measured with {command}",
              "long": curve(a.model, a.n, a.size, a.epochs),
              "more_data": curve(a.model, 4 * a.n, a.size, 10)}
    record["seconds"] = time.time() - t0
    a.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
