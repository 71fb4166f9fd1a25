"""Benchmark: overhead of our ASR train stage over a bare NeMo `trainer.fit` on the same config and data.

Ours = the pipeline's train stage (tasks/asr/train.py through hackathon/core/training.py): atomic checkpoint
every epoch (last + best by val CER), CSV loss log, resume bookkeeping, OOM back-off wrapper, best
weights reloaded and saved as model/trained.nemo.
Bare = what the notebooks did: restore the same init.nemo, set up the same data loaders and optimiser,
`lightning.pytorch.Trainer(max_epochs=..., <same precision/devices>)` with Lightning's defaults, `fit`.

Both start from the same model/init.nemo, seed and manifests (the prepare + model stages run once,
untimed). One run each, in one process (ours first; --bare-first swaps the order) (NeMo imported before either). Target: <= 1.05.

    flock /tmp/hackathon-train.lock .venv/bin/python bench/asr_overhead.py [--epochs N] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def prepared_run(workdir: Path, overrides: list[str]):
    """A run dir with the prepare and model stages done (untimed)."""
    from hackathon.core.runner import execute_stages, pipeline_module, prepare_run

    ctx = prepare_run("asr", overrides, run_dir=workdir / "ours")
    stages = pipeline_module("asr").build_stages(ctx.cfg)
    execute_stages(ctx, [s for s in stages if s.name in ("prepare", "model")], echo=lambda s: None)
    return ctx, [s for s in stages if s.name == "train"]


def time_ours(ctx, train_stage) -> float:
    from hackathon.core.runner import execute_stages

    t0 = time.perf_counter()
    execute_stages(ctx, train_stage, echo=lambda s: None)
    return time.perf_counter() - t0


def time_bare(ctx, workdir: Path) -> float:
    import lightning.pytorch as pl
    from omegaconf import open_dict

    from hackathon.core.training import trainer_settings
    from tasks.asr.model import INIT_MODEL, dataset_config, read_vocabulary_report, restore_model
    from tasks.asr.prepare import manifest_path
    from tasks.asr.train import nemo_optim_config

    cfg = ctx.cfg
    labels = read_vocabulary_report(ctx.run_dir)["vocabulary"]
    t0 = time.perf_counter()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    settings = trainer_settings(cfg.trainer)  # same device/precision choices as ours
    trainer = pl.Trainer(default_root_dir=str(workdir / "bare"), **settings)
    model = restore_model(ctx.run_dir / INIT_MODEL, trainer=trainer)
    model.setup_training_data(dataset_config(cfg, manifest_path(ctx.run_dir, "train"), labels,
                                             int(cfg.trainer.batch_size), shuffle=True, training=True))
    model.setup_validation_data(dataset_config(cfg, manifest_path(ctx.run_dir, "val"), labels,
                                               int(cfg.evaluate.batch_size), shuffle=False, training=False))
    with open_dict(model.cfg):
        model.cfg.optim = nemo_optim_config(cfg)
    trainer.fit(model)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs for both (default: the spec's)")
    parser.add_argument("--bare-first", action="store_true", help="time the bare fit first (order check)")
    parser.add_argument("overrides", nargs="*", help="extra key=value spec overrides")
    args = parser.parse_args()
    overrides = list(args.overrides) + ([f"trainer.max_epochs={args.epochs}"] if args.epochs else [])
    import nemo.collections.asr  # noqa: F401  (import cost paid before either timing)

    with tempfile.TemporaryDirectory(prefix="asr-overhead-") as tmp:
        workdir = Path(tmp)
        ctx, train_stage = prepared_run(workdir, overrides)
        if args.bare_first:
            bare = time_bare(ctx, workdir)
            ours = time_ours(ctx, train_stage)
        else:
            ours = time_ours(ctx, train_stage)
            bare = time_bare(ctx, workdir)
    epochs = int(ctx.cfg.trainer.max_epochs)
    print(f"epochs: {epochs}, train utterances: {ctx.meta['stages']['prepare'].get('n_train')}")
    print(f"ours (train stage): {ours:.1f} s")
    print(f"bare trainer.fit:   {bare:.1f} s")
    print(f"ratio ours/bare:    {ours / bare:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
