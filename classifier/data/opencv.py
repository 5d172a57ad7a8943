"""OpenCV as the project uses it: every module imports cv2 from here (tests/test_rerun_policy.py holds it).

Data stages must write the same bytes on every CPU, or a fresh clone's `dvc status` never matches
the committed dvc.lock. OpenCV picks code by CPU at run time: Intel IPP's AVX-512 bicubic resize
and the AVX2 warpAffine round differently from its portable code (6 of the digits' pixels,
measured). So the portable code only, set once here for every module that imports cv2 from this one.
"""
import cv2

cv2.setUseOptimized(False)

__all__ = ["cv2"]
