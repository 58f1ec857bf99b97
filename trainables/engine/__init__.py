"""The engine: one trial loop that runs every family's training plan.

* loop.py         `run_trial(family, config, ctx)`: data on the device, the plan's stages, precision,
                  checkpoints and resume, data-parallel workers, reporting, caching every exit's outputs;
* family.py       what a family supplies to it (`Family`, its hooks' `TrialInputs`, `Evaluation`);
* plan.py         a trial's training plan: stages (what trains, optimiser, schedule, epochs) and stop rules;
* optim.py        optimisers and learning-rate schedules from the config;
* precision.py    fp32 / bf16 / fp16 (with a gradient scaler) from the config;
* device_data.py  uint8 splits on the device, batches and on-device augmentation;
* cost.py         FLOPs and measured latency of every exit;
* memory.py       a trial's peak memory, measured with the engine's own training step.

Beneath it sits the pure layer, which imports no torch (tests/trainables/test_pure.py): the
contract (trainables/contract.py), Pareto fronts and hypervolume (trainables/pareto.py), metric
math (trainables/metrics.py), the class hierarchy (trainables/hierarchy.py), exit policies and
their calibration (trainables/exits/), and plan.py here. Importing this package loads nothing.
"""
