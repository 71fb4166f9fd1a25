"""DDP through the real runner: `python -m tests.team.ddp_pipeline SPEC RUN_DIR` runs task "asr" with
the ASR pipeline's own prepare and model stages (the demo corpus, the demo QuartzNet) and a train stage
that fits that model with Lightning DDP on `trainer.devices` CPU processes (gloo).

Lightning starts the second process by re-running this same command with LOCAL_RANK=1; the runner sends
it to hackathon.core.ddp.run_worker, which joins rank 0's train stage. Each rank writes ddp/rank<N>.json
(world size, steps, pid) so the test can see both processes trained together.

This stage builds its own Trainer (no checkpoints, a few batches) to compare the ranks' weights;
the model, data loaders and optimiser come from tasks/asr/train.py's builder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types

from hackathon.core.runner import Stage


def ddp_train_stage(ctx) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.strategies import DDPStrategy

    from tasks.asr.train import make_model_builder

    cfg = ctx.cfg
    pl.seed_everything(int(cfg.seed), verbose=False)
    trainer = pl.Trainer(accelerator="cpu", devices=int(cfg.trainer.devices), num_nodes=1,
                         strategy=DDPStrategy(process_group_backend="gloo"), max_epochs=int(cfg.trainer.max_epochs),
                         limit_train_batches=int(cfg.ddp_test.train_batches), limit_val_batches=0,
                         logger=CSVLogger(str(ctx.logs_dir), name="ddp"), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    model = make_model_builder(ctx)(trainer, int(cfg.trainer.batch_size))
    first = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit(model)
    changed = sum(int(not (p.detach() == first[n]).all()) for n, p in model.named_parameters())
    # DDP averages gradients across ranks: every rank must end with bit-identical weights
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for _, p in model.named_parameters()))
    losses = trainer.callback_metrics
    report = {"global_rank": trainer.global_rank, "world_size": trainer.world_size, "pid": os.getpid(),
              "global_step": trainer.global_step, "params_changed": changed, "params": len(first),
              "weights_sha256": digest.hexdigest(),
              "train_loss": float(losses["train_loss"]) if "train_loss" in losses else None,
              "backend": trainer.strategy.process_group_backend}
    target = ctx.path("ddp", f"rank{trainer.global_rank}.json")
    target.write_text(json.dumps(report))
    if trainer.global_rank == 0:
        ctx.write_metrics({"ddp_world_size": trainer.world_size, "ddp_global_step": trainer.global_step})


def build_stages(cfg):
    from tasks.asr import pipeline as asr_pipeline

    asr = {s.name: s for s in asr_pipeline.build_stages(cfg)}
    return [asr["prepare"], asr["model"],
            Stage("train", ddp_train_stage, "train", trainer="trainer", config_keys=("seed", "data", "trainer", "ddp_test"))]


def main(argv: list[str]) -> int:
    import hackathon.core.runner as runner

    spec, run_dir = argv[:2]
    runner.pipeline_module = lambda task: types.SimpleNamespace(build_stages=build_stages)
    overrides = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
                 "+ddp_test.train_batches=3", *argv[2:]]
    runner.run_task("asr", overrides, spec=spec, run_dir=run_dir, echo=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
