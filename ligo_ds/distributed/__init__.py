"""The DeepSpeed boundary: the only package of ligo_ds that imports deepspeed (tests/test_boundary.py
checks it), split by job:

    launch.py      ranks from whichever launcher started us; the process group; collectives
    engine.py      models built under ZeRO (zero.Init), the engine, and what a step needs from it
    partition.py   weights into and out of a ZeRO-3 partitioned model, one tensor or module at a time
    checkpoint.py  checkpoints: save with a manifest and a `latest` written last, load, universal conversion

Everything else takes an engine or a plain model. deepspeed is imported inside the functions that use
it, not at import time: importing it takes seconds and sets PYTORCH_NVML_BASED_CUDA_CHECK, and commands
that never train (report, prepare, --help) should do neither. This file imports nothing on purpose.
"""
