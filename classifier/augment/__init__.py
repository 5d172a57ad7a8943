"""Augmentation: offline (the augment stage's blurs, flips, rotations, noise), online (train's
per-batch ops on the device) and the online policies (TrivialAugment, RandAugment).
"""
