"""Running and comparing experiments beside the pipeline, for the tools (no stage imports it): the one
client of DVC (dvc_client), search spaces (search), tables of experiments (table), tools.tune's
studies read back (study), and DVC's queue on a Ray cluster (cluster; cluster_node, what a node runs).
"""
