"""The fake SendGrid: holds bodies to the rules of the published Mail Send schema, fails on request."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from newsletter.testing.fake_esp import FakeEsp, Fault, spawn_fake_esp


def personalization(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "to": [{"email": f"reader{i}@example.org", "name": f"Reader {i}"}],
        "substitutions": {"~nlh~name~": f"Reader {i}", "~nlt~name~": f"Reader {i}"},
        "custom_args": {"delivery_id": str(i), "bulletin_id": "7"},
        "headers": {
            "List-Unsubscribe": f"<https://example.org/u/{i}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        **extra,
    }


def mail(n: int = 2, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "personalizations": [personalization(i) for i in range(1, n + 1)],
        "from": {"email": "bulletin@example.org", "name": "Prayer Bulletin"},
        "subject": "This week",
        "content": [
            {"type": "text/plain", "value": "Dear ~nlt~name~"},
            {"type": "text/html", "value": "<p>Dear ~nlh~name~</p>"},
        ],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


API_KEY = "SG.fake-api-key-for-tests"  # what the fake_esp fixture accepts


def post(
    fake: FakeEsp, body: object, *, key: str | None = API_KEY, timeout: float = 10
) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(fake.url + "/v3/mail/send", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return exc.code, exc.headers, json.loads(payload) if payload else None


def error_fields(answer: Any) -> list[str | None]:
    return [e["field"] for e in answer["errors"]]


# --- accepting ------------------------------------------------------------------------------------
def test_a_valid_body_is_accepted_with_a_message_id_and_every_recipient_recorded(fake_esp: FakeEsp) -> None:
    status, headers, _ = post(fake_esp, mail(3))

    assert status == 202
    message_id = headers["X-Message-Id"]
    assert message_id
    accepted = fake_esp.accepted()
    assert [r.email for r in accepted] == [
        "reader1@example.org",
        "reader2@example.org",
        "reader3@example.org",
    ]
    first = accepted[0]
    assert first.delivery_id == "1" and first.bulletin_id == "7"
    assert first.substitutions["~nlh~name~"] == "Reader 1"
    assert first.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first.subject == "This week" and first.message_id == message_id
    assert fake_esp.stats()["accepted"] == 3


def test_delivery_ids_are_counted_once_and_repeats_are_reported_as_duplicates(fake_esp: FakeEsp) -> None:
    post(fake_esp, mail(3))
    post(fake_esp, mail(2))

    stats = fake_esp.stats()
    assert stats["accepted"] == 5
    assert stats["unique_delivery_ids"] == 3
    assert stats["duplicate_delivery_ids"] == 2
    assert fake_esp.delivery_ids() == [1, 2, 3, 1, 2]


def test_exactly_1000_personalizations_are_accepted(fake_esp: FakeEsp) -> None:
    status, _, _ = post(fake_esp, mail(1000))
    assert status == 202


# --- the schema's rules ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (mail(1001), "personalizations"),
        (mail(personalizations=[]), "personalizations"),
        (mail(personalizations=None), "personalizations"),
        (mail(personalizations=[{"to": []}]), "personalizations.0.to"),
        (mail(personalizations=[{"subject": "x"}]), "personalizations.0.to"),
        (mail(personalizations=[{"to": [{"email": "not-an-address"}]}]), "personalizations.0.to.0.email"),
        (mail(personalizations=[{"to": [{"name": "No Address"}]}]), "personalizations.0.to.0.email"),
        (
            mail(personalizations=[personalization(1, substitutions={"~n~": 5})]),
            "personalizations.0.substitutions.~n~",
        ),
        (
            mail(personalizations=[personalization(1, substitutions={"~n~": "x" * 10_001})]),
            "personalizations.0.substitutions",
        ),
        (
            mail(
                personalizations=[personalization(1, substitutions={f"~{k}~": "x" * 2000 for k in range(6)})]
            ),
            "personalizations.0.substitutions",
        ),
        (
            mail(personalizations=[personalization(1, custom_args={"delivery_id": 1})]),
            "personalizations.0.custom_args.delivery_id",
        ),
        (
            mail(personalizations=[personalization(1, custom_args={"blob": "y" * 10_001})]),
            "personalizations.0.custom_args",
        ),
        (
            mail(personalizations=[personalization(1, headers={"Subject": "sneaky"})]),
            "personalizations.0.headers.Subject",
        ),
        (
            mail(personalizations=[personalization(1, headers={"x-sg-id": "1"})]),
            "personalizations.0.headers.x-sg-id",
        ),
        (
            mail(personalizations=[personalization(1, headers={"DKIM-Signature": "v=1"})]),
            "personalizations.0.headers.DKIM-Signature",
        ),
        (mail(headers={"Content-Transfer-Encoding": "base64"}), "headers.Content-Transfer-Encoding"),
        (mail(headers={"Reply-To": "a@example.org"}), "headers.Reply-To"),
        (mail(headers={"X-Count": 3}), "headers.X-Count"),
        (mail(2, **{"from": None}), "from.email"),
        (mail(2, **{"from": {"email": "nobody"}}), "from.email"),
        (mail(subject=None), "subject"),
        (mail(subject=""), "subject"),
        (mail(content=None), "content"),
        (mail(content=[]), "content"),
        (mail(content=[{"type": "text/plain", "value": ""}]), "content.0.value"),
        (
            mail(content=[{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}]),
            "content",
        ),
        (mail(reply_to={"email": "bad address"}), "reply_to.email"),
        (mail(categories=[f"c{i}" for i in range(11)]), "categories"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_body_breaking_a_rule_of_the_schema_is_refused_with_400_naming_the_field(
    fake_esp: FakeEsp, body: dict[str, Any], field: str
) -> None:
    status, _, answer = post(fake_esp, body)

    assert status == 400
    assert field in error_fields(answer)
    assert all({"message", "field", "help"} <= set(e) for e in answer["errors"])
    assert fake_esp.accepted() == []


def test_more_than_1000_recipients_across_personalizations_is_refused(fake_esp: FakeEsp) -> None:
    body = mail(
        personalizations=[
            {"to": [{"email": f"r{i}a@example.org"}, {"email": f"r{i}b@example.org"}]} for i in range(501)
        ]
    )
    status, _, answer = post(fake_esp, body)
    assert status == 400 and "personalizations" in error_fields(answer)


def test_the_same_address_twice_in_one_personalization_is_refused(fake_esp: FakeEsp) -> None:
    body = mail(personalizations=[{"to": [{"email": "a@example.org"}], "cc": [{"email": "A@example.org"}]}])
    status, _, answer = post(fake_esp, body)
    assert status == 400 and "personalizations.0.cc" in error_fields(answer)


def test_a_subject_in_every_personalization_replaces_the_top_level_one(fake_esp: FakeEsp) -> None:
    body = mail(subject=None, personalizations=[personalization(1, subject="Just for you")])
    status, _, _ = post(fake_esp, body)
    assert status == 202
    assert fake_esp.accepted()[0].subject == "Just for you"


def test_a_body_that_is_not_json_is_a_bad_request(fake_esp: FakeEsp) -> None:
    status, _, answer = post(fake_esp, b"{not json")
    assert status == 400 and answer["errors"][0]["message"] == "Bad Request"


def test_a_body_over_the_size_limit_is_refused_with_413_and_its_size_recorded(fake_esp: FakeEsp) -> None:
    small, large = (json.dumps(mail(n)).encode() for n in (1, 10))
    fake_esp.configure(max_body_bytes=len(large) - 1)
    assert post(fake_esp, large)[0] == 413
    assert post(fake_esp, small)[0] == 202
    assert [(r.outcome, r.size) for r in fake_esp.requests()] == [("413", len(large)), ("202", len(small))]
    assert [a.delivery_id for a in fake_esp.accepted()] == ["1"]


def test_a_request_without_a_bearer_token_is_unauthorized(fake_esp: FakeEsp) -> None:
    assert post(fake_esp, mail(), key=None)[0] == 401
    assert post(fake_esp, mail(), key="SG.someone-else")[0] == 401
    assert fake_esp.accepted() == []


# --- faults ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 401, 403, 500, 503])
def test_told_to_fail_it_answers_that_status_in_sendgrids_error_shape(fake_esp: FakeEsp, status: int) -> None:
    fake_esp.fail(status)
    code, _, answer = post(fake_esp, mail())
    assert code == status
    assert answer["errors"][0]["message"]
    assert fake_esp.accepted() == []


def test_a_429_carries_the_rate_limit_headers(fake_esp: FakeEsp) -> None:
    fake_esp.configure(rate_limit_reset=5)
    fake_esp.fail(429)
    code, headers, _ = post(fake_esp, mail())
    assert code == 429
    assert headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["X-RateLimit-Limit"]) > 0
    assert time.time() + 4 <= int(headers["X-RateLimit-Reset"]) <= time.time() + 7


def test_a_fault_for_the_next_n_requests_expires_after_them(fake_esp: FakeEsp) -> None:
    fake_esp.fail(503, count=2)
    assert [post(fake_esp, mail())[0] for _ in range(3)] == [503, 503, 202]
    assert [r.outcome for r in fake_esp.requests()] == ["503", "503", "202"]


def test_faults_at_a_rate_are_seeded_and_add_up(fake_esp: FakeEsp) -> None:
    def run() -> list[int]:
        fake_esp.reset()
        fake_esp.configure(seed=42, faults=[Fault("status", 500, rate=0.2), Fault("status", 429, rate=0.1)])
        return [post(fake_esp, mail(1))[0] for _ in range(60)]

    first = run()
    assert first == run()
    failures = sum(code != 202 for code in first)
    assert 8 <= failures <= 30
    assert {500, 429, 202} == set(first)


def test_a_dropped_connection_gets_no_answer_and_accepts_nothing(fake_esp: FakeEsp) -> None:
    fake_esp.drop(count=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        post(fake_esp, mail())
    assert fake_esp.accepted() == []
    assert post(fake_esp, mail())[0] == 202


def test_a_drop_after_accepting_leaves_the_outcome_unknown_to_the_client(fake_esp: FakeEsp) -> None:
    fake_esp.drop(count=1, after_accept=True)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        post(fake_esp, mail(2))
    assert len(fake_esp.accepted()) == 2


def test_a_slow_answer_the_client_gave_up_on_accepts_nothing(fake_esp: FakeEsp) -> None:
    fake_esp.slow(0.6, count=1)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        post(fake_esp, mail(), timeout=0.2)
    time.sleep(0.7)
    assert fake_esp.accepted() == []
    assert [r.outcome for r in fake_esp.requests()] == ["abandoned"]


def test_a_slow_answer_the_client_waits_for_is_accepted(fake_esp: FakeEsp) -> None:
    fake_esp.slow(0.2, count=1)
    assert post(fake_esp, mail(1), timeout=5)[0] == 202
    assert len(fake_esp.accepted()) == 1


def test_a_batch_with_a_rejected_address_is_refused_naming_it(fake_esp: FakeEsp) -> None:
    fake_esp.reject_addresses(r"@invalid\.test$")
    body = mail(2)
    body["personalizations"].append(personalization(3) | {"to": [{"email": "someone@invalid.test"}]})

    status, _, answer = post(fake_esp, body)

    assert status == 400
    assert error_fields(answer) == ["personalizations.2.to.0.email"]
    assert answer["errors"][0]["message"] == "Does not contain a valid address."
    body["personalizations"].pop()
    assert post(fake_esp, body)[0] == 202


# --- control over HTTP, as its own process --------------------------------------------------------
def test_the_http_control_api_configures_and_reports(fake_esp: FakeEsp) -> None:
    def call(method: str, path: str, payload: object = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else b""
        request = urllib.request.Request(
            fake_esp.url + path, data=data if method == "POST" else None, method=method
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    config = call("POST", "/_fake/config", {"faults": [{"action": "status", "status": 503, "count": 1}]})
    assert config["faults"][0]["remaining"] == 1
    assert post(fake_esp, mail(1))[0] == 503
    assert post(fake_esp, mail(1))[0] == 202
    stats = call("GET", "/_fake/stats")
    assert stats["requests"] == 2 and stats["outcomes"] == {"503": 1, "202": 1} and stats["accepted"] == 1
    recipients = call("GET", "/_fake/recipients?offset=0&limit=10")
    assert recipients["total"] == 1 and recipients["recipients"][0]["email"] == "reader1@example.org"
    call("POST", "/_fake/reset")
    assert call("GET", "/_fake/stats")["accepted"] == 0


@pytest.mark.slow
def test_runs_as_its_own_process_controlled_over_http() -> None:
    with spawn_fake_esp("--no-record-bodies", "--api-key", API_KEY) as remote:
        remote.fail(500, count=1)
        client = FakeEsp.__new__(FakeEsp)  # only for its url, to reuse `post`
        client.host, client.port = "127.0.0.1", int(remote.url.rsplit(":", 1)[1])
        assert post(client, mail(3))[0] == 500
        assert post(client, mail(3))[0] == 202
        stats = remote.stats()
        assert stats["accepted"] == 3 and stats["outcomes"] == {"500": 1, "202": 1}
        assert remote.recipients()["delivery_ids"] == [1, 2, 3]
        process = remote.process
    assert process is not None and process.returncode is not None
