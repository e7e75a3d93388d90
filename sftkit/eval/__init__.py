"""``sftkit eval``: generate with one or more models, score, bootstrap, report.

The rooms, split as validate is:

- ``command``: the CLI, options into an ``EvalSettings``;
- ``engine``: ``run_eval``: the prepared rows, one model after another, the result data;
- ``scoring``: metric plugins resolved before any model loads, per-example scores,
  aggregates with bootstrap intervals and paired differences, sanity warnings;
- ``printing``: the terminal table and the headline.

Generation itself is ``sftkit.generate``; label mapping ``sftkit.labels``; the statistics
``sftkit.stats``.
"""
