"""One vocabulary: every state, type and reason has words in English and Chinese, and pages and
mail take them from portal.vocabulary (a reason code never reaches a person as the sentence)."""
from types import SimpleNamespace

import pytest
from flask_babel import force_locale

from portal import vocabulary
from portal.vocabulary import JOB_TYPES, JobState, Reason

REASONS = vocabulary.reason_codes()  # every code the portal writes, enumerated from Reason


def job(reason, state="Failed"):
    return SimpleNamespace(reason=reason, state=state, message="details", exit_code=3, image="busybox:1",
                           time_limit_seconds=7200)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_every_state_and_type_has_words(app, language):
    with app.test_request_context(), force_locale(language):
        states, types = vocabulary.state_words(), vocabulary.type_words()
        assert set(states) == {s.value for s in JobState} and set(types) == set(JOB_TYPES)
        if language == "zh":
            assert all(word != code for code, word in states.items())


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_reads_as_a_sentence(app, language, reason):
    with app.test_request_context(), force_locale(language):
        sentence, _detail = vocabulary.reason_words(job(reason))
        assert sentence and sentence != reason and (" " in sentence or language == "zh")


def test_the_reasons_are_enumerated_from_the_vocabulary():
    assert Reason.FAILED in REASONS and Reason.CANCELLED in REASONS and set(Reason.IMAGE_PULL) <= set(REASONS)
    assert len(REASONS) == len(set(REASONS))


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_has_a_short_label_in_both_languages(app, reason):
    with app.test_request_context():
        with force_locale("en"):
            english = vocabulary.reason_label(reason)
        with force_locale("zh"):
            chinese = vocabulary.reason_label(reason)
    assert english and english != reason and english != vocabulary.reason_label("SomethingTheClusterSays")
    assert chinese != english


def test_the_final_and_open_states_partition_the_states():
    """Open = Queued (no cluster objects, no quota) or active (admitted, holding quota)."""
    assert set(vocabulary.OPEN_STATES) | set(vocabulary.FINAL_STATES) == {s.value for s in JobState}
    assert not set(vocabulary.OPEN_STATES) & set(vocabulary.FINAL_STATES)
    assert set(vocabulary.OPEN_STATES) - set(vocabulary.ACTIVE_STATES) == {"Queued"}


def test_numbers_take_their_plurals(app):
    """One GPU, two GPUs: the plural follows the number (Chinese has one form)."""
    with app.test_request_context():
        def reclaim(n):
            return vocabulary.history_words(SimpleNamespace(action="job.reclaim", actor_name="system",
                                                            detail={"gpus": n, "victims": [7]}))
        assert reclaim(1).startswith("took back 1 GPU lent") and reclaim(2).startswith("took back 2 GPUs lent")
        with force_locale("zh"):
            assert "1 个 GPU" in reclaim(1) and "2 个 GPU" in reclaim(2)


def test_a_jobs_history_has_no_raw_codes_or_empty_parentheses(app):
    with app.test_request_context():
        def line(action, who="dora", **detail):
            return vocabulary.history_words(SimpleNamespace(action=action, actor_name=who, detail=detail))
        assert line("job.extend", hours=1) == "1 more hour granted by dora"
        assert line("job.extend", hours=3, note="ok") == "3 more hours granted by dora (ok)"
        assert line("job.extension_rejected", hours=2) == "request for 2 more hours rejected by dora"
        stopped = line("job.stop", who="root", reason=Reason.STOPPED_BY_ADMIN)
        assert "StoppedByAdmin" not in stopped and stopped.startswith("stopped by root (")
        assert line("job.stop", who="alice") == "stopped by alice"


def test_small_hours_are_not_rounded_to_nothing():
    assert [vocabulary.hours_text(h) for h in (0, 0.001, 0.04, 0.2, 12.345)] == ["0.0", "<0.01", "0.04", "0.2", "12.3"]
