"""Batch jobs over the lake, one module each, each run as ``python -m batch.<job>``.

The modules here are the jobs a user runs: consolidate, resample, gold, intraday, alerts, gaps,
vacuum, retention, export, and pipeline (the daily run of them all). What they share (manifest,
checkpoints, Fibonacci bars, process pools, shard parts...) lives in :mod:`batch.engine`, so this
folder lists the jobs and nothing else.
"""
