"""The machinery of the batch jobs: nothing here is run by itself.

Jobs sit one level up (``python -m batch.<job>``) and import from here; modules here never import
a job, so each can be read and tested without the command lines built on it. Grouped by use:

- every job: ``common`` (command line, symbol selection, run recording), ``retry``, ``pool`` and
  ``forking`` (per-symbol work on threads or forked processes), ``parts`` (shard-safe metadata);
- consolidation: ``manifest``, ``screen``, ``cleanup``, ``tails``, ``minutes``;
- resample: ``fib`` and ``kernels`` (Fibonacci bars), ``months``, ``silver``, ``checkpoint``,
  ``planning``, ``staging``, ``daily_rows`` and ``shared_load`` (reading the consolidated rows);
- gold: ``gold_inputs``, ``gold_state``, ``gold_files``;
- gaps: ``gap_alerts``.
"""
