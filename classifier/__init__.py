"""The shared code of the stages and tools: typed params, image files and formats, augmentation, models,
the training loop, scores and charts, and writing outputs safely. Each module names what it holds;
dvc.yaml lists, per stage, exactly the modules it imports."""
