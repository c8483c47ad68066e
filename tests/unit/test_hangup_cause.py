"""One rule turns a Q.850 hangup cause into the outcome of an unanswered call
(dialguard.decision.models.not_answered_result), through the FastAGI report
(no DIALSTATUS) and the dialer alike. Cause 16 (normal clearing) on a call never
reported answered is a no-answer: counted, as when in doubt."""

import pytest

from agi.handlers.report import classify
from ari_app.calls import not_answered_result as dialer_result
from dialguard.decision.models import not_answered_result


@pytest.mark.parametrize("cause, result", [
    (16, "no_answer"), (0, "no_answer"), (18, "no_answer"), (19, "no_answer"),
    (17, "busy"), (1, "failed"), (21, "failed"), (34, "failed"), (127, "failed"),
])
def test_cause_rule(cause, result):
    assert not_answered_result(cause) == result


@pytest.mark.parametrize("cause", range(128))
def test_agi_report_and_dialer_agree_on_every_cause(cause):
    agi = classify("", None, None, cause)
    assert agi.result == dialer_result(cause) == not_answered_result(cause)
    assert agi.talk_s == 0 and agi.hangup_cause == cause


def test_cause_16_without_dialstatus_is_no_answer_on_both_paths():
    assert classify(None, None, None, 16).result == "no_answer"
    assert classify("", None, 0, 16).result == "no_answer"
    assert dialer_result(16) == "no_answer"


def test_what_only_one_path_knows():
    # a DIALSTATUS says more than the cause: the AGI report follows it
    assert classify("CHANUNAVAIL", None, 0, 16).result == "failed"
    assert classify("BUSY", None, 0, 16).result == "busy"
    # no DIALSTATUS and no cause: Dial never ran (AGI); the dialer's call vanished: counted
    assert classify("", None, None, None).result == "failed"
    assert dialer_result(None) == "no_answer"
