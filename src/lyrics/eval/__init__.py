"""Evaluation: official-convention metrics (`lyrics.eval.metrics`) and the trivial baselines every
result table prints beside the model (`lyrics.eval.baselines`).

Import the submodules directly; this package file stays empty of imports so that any `lyrics.eval.*`
import is cheap and pulls in nothing it does not need.
"""
