"""Evaluation harnesses of the knowledge layer's rankers, run by ``manage.py evaluate``:
``diagnosis`` (link-hold-out vignettes for the diagnosis ranker) and ``discovery`` (AUC and gold
ranks for the hypothesis kind's measures); ``progress`` is the commands' optional progress bar."""
