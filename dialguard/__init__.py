"""dialguard: an outbound-call compliance guard for Asterisk.

The decision logic lives in :mod:`dialguard.engine`; AGI, ARI and CLI are thin
adapters around it.
"""

from dialguard.decision.models import Decision, DecisionRequest, Outcome, REASONS

__all__ = ["Decision", "DecisionRequest", "Outcome", "REASONS"]
__version__ = "0.1.0"
