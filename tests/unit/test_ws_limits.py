"""Message-rate and slow-client arithmetic, driven by explicit times."""

from __future__ import annotations

from gateways.ws.limits import MessageRateLimit, Send, SlowClientRule, Verdict, within_subscription_limit


def test_a_burst_is_allowed_then_messages_are_rejected_then_the_connection_closed() -> None:
    limit = MessageRateLimit(rate_per_s=10, burst=3, max_strikes=2)
    assert [limit.check(0.0) for _ in range(3)] == [Verdict.ALLOW] * 3
    assert limit.check(0.0) is Verdict.REJECT
    assert limit.check(0.0) is Verdict.CLOSE


def test_tokens_come_back_at_the_rate_and_an_allowed_message_clears_the_strikes() -> None:
    limit = MessageRateLimit(rate_per_s=10, burst=1, max_strikes=2)
    assert limit.check(0.0) is Verdict.ALLOW
    assert limit.check(0.01) is Verdict.REJECT
    assert limit.check(0.2) is Verdict.ALLOW  # 0.19 s later: one token back
    assert limit.check(0.2) is Verdict.REJECT  # strikes started again from zero


def test_a_client_within_the_skip_threshold_is_written() -> None:
    rule = SlowClientRule(skip_bytes=100, close_bytes=400, grace_s=5)
    assert rule.decide(100, None, 0.0) is Send.WRITE
    assert rule.decide(50, 1.0, 100.0) is Send.WRITE


def test_a_client_behind_is_skipped_then_closed_after_the_grace_or_past_the_hard_limit() -> None:
    rule = SlowClientRule(skip_bytes=100, close_bytes=400, grace_s=5)
    assert rule.decide(101, None, 0.0) is Send.SKIP
    assert rule.decide(300, 0.0, 5.0) is Send.SKIP
    assert rule.decide(300, 0.0, 5.1) is Send.CLOSE
    assert rule.decide(401, None, 0.0) is Send.CLOSE


def test_the_subscription_limit() -> None:
    assert within_subscription_limit(45, 5, 50)
    assert not within_subscription_limit(45, 6, 50)
