"""params.yaml, read into typed frozen dataclasses: one module per section, beside the checking helpers.

    checks.py          the checks every section uses, and the reader (load_sections, parse_section)
    data.py ... evaluate.py   one section each (augment's online* keys: online_augment.py, read by train)
    whole_file.py      every section and the rules across sections: the params check stage, the sweep
    __main__.py        `python -m stages.params`: the first stage of dvc.yaml, checking the whole file

A stage imports the modules of the sections it reads and nothing else, so an edit to one section's
rules reruns only the stages that read it (DVC reruns a stage when a code file it depends on changes).
This file imports nothing: every stage that reads params depends on it.
"""
