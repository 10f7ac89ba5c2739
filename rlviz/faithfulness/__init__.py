"""Which attribution map to trust for an agent: randomisation sanity checks, deletion / insertion
against a random order, ground truth where the env has masks, and cost (``rlviz.trust``)."""

from rlviz.faithfulness.report import methods_from, write
from rlviz.faithfulness.run import THRESHOLDS, TrustReport, record, trust

__all__ = ["THRESHOLDS", "TrustReport", "methods_from", "record", "trust", "write"]
