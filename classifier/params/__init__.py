"""params.yaml, read into typed frozen dataclasses: one module per section, beside the checking helpers.

    checks.py          the checks every section uses, and the reader (load_sections, parse_section)
    data.py ... evaluate.py   one section each (augment's online* keys: online_augment.py, read by train)
    whole_file.py      every section and the rules across sections: stages/params.py, tools.tune

A stage imports the modules of the sections it reads, so an edit to one section's rules reruns the
stages that read it (DVC reruns a stage when a code file it depends on changes), and those that load
what the section's dataclass describes: prepare.py is the schema of the preprocessing contract and
model.py of the checkpoint's model, which train and evaluate load, so an edit to either reruns them too. tests/test_rerun_policy.py holds
both. This file imports nothing: every stage that reads params depends on it.
"""
