"""Training: the loop (loop), resuming it (resume), devices and the data on them (devices,
device_dataset, cpu_kernels), data-parallel runs (distributed), optimisers and schedules (optim),
and a tools.tune study as train sees it (tuning).
"""
