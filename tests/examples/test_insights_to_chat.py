"""examples/insights_to_chat: Insights events → one chat message each (HTTP faked)."""

from __future__ import annotations

from typing import Any

import pytest

from examples.insights_to_chat.handler import handle


def insight(state: str = "Start") -> dict[str, Any]:
    return {
        "source": "opentrail",
        "detail-type": "AWS Insight via CloudTrail",
        "detail": {
            "eventVersion": "1.11",
            "eventTime": "2025-03-14T10:00:00Z",
            "awsRegion": "eu-west-1",
            "eventType": "AwsCloudTrailInsight",
            "eventCategory": "Insight",
            "insightDetails": {
                "state": state,
                "eventSource": "iam.amazonaws.com",
                "eventName": "CreateAccessKey",
                "insightType": "ApiCallRateInsight",
                "insightContext": {
                    "statistics": {"baseline": {"average": 0.01}, "insight": {"average": 4.5}},
                    "explanation": "CreateAccessKey ran 450 times more often than usual.",
                },
            },
        },
    }


class FakePost:
    def __init__(self, status: int = 200) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.status = status

    def __call__(self, url: str, body: dict[str, Any]) -> int:
        self.calls.append((url, body))
        return self.status


def test_insight_start_is_posted() -> None:
    post = FakePost()
    assert handle(insight(), url="https://chat.example/hook", post=post) == {"posted": True, "status": 200}
    ((url, body),) = post.calls
    assert url == "https://chat.example/hook"
    assert "Insight Start: ApiCallRateInsight on iam.amazonaws.com CreateAccessKey" in body["text"]
    assert "baseline 0.01/min, now 4.50/min" in body["text"]
    assert "450 times" in body["text"]


def test_other_events_are_ignored() -> None:
    post = FakePost()
    event = insight()
    event["detail"]["eventType"] = "AwsApiCall"
    assert handle(event, url="u", post=post)["posted"] is False
    assert post.calls == []


def test_chat_error_raises_for_retry() -> None:
    with pytest.raises(RuntimeError, match="HTTP 500"):
        handle(insight("End"), url="u", post=FakePost(500))
