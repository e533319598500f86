"""The training side: one run pipeline for pretraining and the operator fit, the trainer and its components,
and what a run is made of.

    pipeline.py       the one run: start -> build -> resume -> engine -> train -> export; a Job says what differs
    pretrain.py       pretraining (PretrainOptions): the decoder as the pipeline's job
    session.py        a run's set-up (RunSpec, checks, process group, DeepSpeed config, identity, claim) and end
    resume.py         where a run starts from: its latest checkpoint, another run's, or nothing
    trainer.py        the loop, made of components:
      checkpointing.py  checkpoints saved (with retention) and loaded
      evaluation.py     validation windows and passes
      samples.py        text from fixed prompts at each evaluation (--sample-prompts)
      recovery.py       bad steps, loss spikes and rollbacks, skipped data
      progress.py       the metrics log, progress bar and a row's training columns (metrics.py: the writer)
      stop.py           a request to checkpoint and stop
      state.py          the trainer's state, a step's result
    loop.py           the Loop block and Training, the blocks the trainer takes
    schedule.py       the Schedule block and the learning rate at each step
    cadence.py        the Cadence block: how often a run evaluates (and samples), saves and logs
    health.py         the Health block and its pure parts (spike statistics, skipped ranges)
    flops.py          training FLOPs and MFU
    rundir.py         the run directory's layout
"""
