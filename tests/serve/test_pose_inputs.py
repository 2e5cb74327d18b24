"""Poses as input over HTTP: by value or by the id of an answered pose, checked before any batch.

``pose_input_served`` serves the ``pose_input_checkpoint_dir`` model (it reads ``<POSE_IN>``)
with its own API key, on the same pose store as ``served`` (another key). Answers are compared
with the library's own answer for the same conversation and pose values.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures.model import POSING_SAMPLES
from tests.fixtures.serving import Served

pytestmark = pytest.mark.slow

STANDING = POSING_SAMPLES[0]["prompt"]
EDIT = "<POSE_IN> Raise the left arm."


@pytest.fixture(scope="module")
def client(pose_input_served: Served) -> httpx.Client:
    with httpx.Client(base_url=pose_input_served.url, headers=pose_input_served.headers, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def library(pose_input_checkpoint_dir: Path) -> Any:
    from posegpt.inference import PoseGPT

    return PoseGPT.from_checkpoint(pose_input_checkpoint_dir)


@pytest.fixture(scope="module")
def asked(client: httpx.Client) -> dict[str, Any]:
    """The standing pose the service answered (with its id)."""
    body = ok(client.post("/v1/chat", json={"messages": [{"role": "user", "content": STANDING}]}))
    assert len(body["poses"]) == 1, body
    return body


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: httpx.Response, code: str, *names: str) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    for name in names:
        assert name in error["message"], error
    return error["message"]


def history(asked: dict[str, Any], ref: Any, content: str = EDIT) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": STANDING},
        {"role": "assistant", "content": asked["text"]},
        {"role": "user", "content": content, "poses": [ref]},
    ]


def test_an_answered_pose_is_edited_by_id_as_the_library_edits_its_value(
    client: httpx.Client, asked: dict[str, Any], library: Any
) -> None:
    before = asked["poses"][0]
    by_id = ok(client.post("/v1/chat", json={"messages": history(asked, before["id"])}))
    by_value = ok(client.post("/v1/chat", json={"messages": history(asked, before["axis_angle"])}))
    # No <POSE_IN> in the text: the given pose goes in front of it.
    implicit = ok(
        client.post("/v1/chat", json={"messages": history(asked, before["id"], "Raise the left arm.")})
    )
    plain = [{k: v for k, v in m.items() if k != "poses"} for m in history(asked, None)]
    expected = library.chat(plain, poses=[before["axis_angle"]], max_new_tokens=16)
    assert expected.text == "Here is the pose <POSE>."  # what the fixture model learnt for this edit
    for got in (by_id, by_value, implicit):
        assert got["text"] == expected.text
        np.testing.assert_allclose(got["poses"][0]["axis_angle"], expected.poses[0], atol=1e-4)
    after = by_id["poses"][0]
    assert after["id"] != before["id"]
    assert np.abs(np.subtract(after["axis_angle"], before["axis_angle"])).max() > 0.05  # it moved

    # The edited pose goes back in turn, by its id: describe it (same answer as the library's).
    describe = ok(
        client.post(
            "/v1/chat",
            json={
                "messages": [
                    {"role": "user", "content": "Describe this pose: <POSE_IN>", "poses": [after["id"]]}
                ]
            },
        )
    )
    assert (
        describe["text"]
        == library.chat("Describe this pose: <POSE_IN>", poses=[after["axis_angle"]], max_new_tokens=16).text
    )


def test_pose_queries_and_the_openai_endpoint_take_poses(
    client: httpx.Client, asked: dict[str, Any], library: Any
) -> None:
    pose = asked["poses"][0]
    body = ok(
        client.post(
            "/v1/poses",
            json={"queries": [{"text": EDIT, "poses": [pose["id"]]}, {"text": STANDING}]},
        )
    )
    expected = library.chat(EDIT, poses=[pose["axis_angle"]], max_new_tokens=16)
    assert body["results"][0]["text"] == expected.text
    openai = ok(
        client.post(
            "/v1/chat/completions",
            json={"model": "posegpt", "messages": [{"role": "user", "content": EDIT, "poses": [pose["id"]]}]},
        )
    )
    choice = openai["choices"][0]
    assert choice["message"]["content"] == expected.text
    np.testing.assert_allclose(choice["poses"][0]["axis_angle"], expected.poses[0], atol=1e-4)
    # Its answered poses get ids as well, usable in the next turn.
    again = {"role": "user", "content": EDIT, "poses": [choice["poses"][0]["id"]]}
    ok(client.post("/v1/chat", json={"messages": [again]}))


def test_bad_poses_are_refused_naming_the_field(client: httpx.Client, asked: dict[str, Any]) -> None:
    good = asked["poses"][0]["axis_angle"]

    def send(ref: Any, content: str = EDIT) -> httpx.Response:
        return client.post("/v1/chat", json={"messages": history(asked, ref, content)})

    refused(send(good[:71]), "invalid_input", "messages[2].poses[0]", "(71,)")
    # JSON has no NaN; Python's encoder (and many clients) still write it.
    nan = [float("nan"), *good[1:]]
    raw = json.dumps({"messages": history(asked, nan)})
    response = client.post("/v1/chat", content=raw, headers={"Content-Type": "application/json"})
    refused(response, "invalid_input", "messages[2].poses[0]", "non-finite")
    refused(send([7.0, 0.0, 0.0, *good[3:]]), "invalid_input", "messages[2].poses[0]", "joint 0", "radians")
    unknown = refused(send("no-such-pose"), "unknown_pose", "messages[2].poses[0]", "'no-such-pose'")
    refused(
        send(good, "<POSE_IN> <POSE_IN> Raise the left arm."), "invalid_input", "messages[2]", "2 <POSE_IN>"
    )
    wrong_turn = [
        {"role": "user", "content": STANDING},
        {"role": "assistant", "content": "x", "poses": [good]},
        {"role": "user", "content": "Hi"},
    ]
    refused(client.post("/v1/chat", json={"messages": wrong_turn}), "invalid_input", "messages[1].poses")
    many = client.post(
        "/v1/chat", json={"messages": [{"role": "user", "content": "Hi", "poses": [good] * 4}]}
    )
    assert many.status_code == 422 and many.json()["error"]["limit"] == "limits.max_input_poses", many.text
    refused(
        client.post("/v1/poses", json={"queries": [{"text": STANDING}, {"text": EDIT, "poses": ["gone"]}]}),
        "unknown_pose",
        "queries[1].poses[0]",
    )
    assert unknown.startswith("messages[2].poses[0]: no pose")


def test_another_keys_pose_id_reads_as_unknown(
    served: Served, client: httpx.Client, asked: dict[str, Any]
) -> None:
    """``served`` (another key) shares this application's pose store: its ids are not usable here."""
    theirs = ok(
        httpx.post(
            f"{served.url}/v1/chat",
            headers=served.headers,
            json={"messages": [{"role": "user", "content": STANDING}]},
            timeout=120,
        )
    )
    their_id = theirs["poses"][0]["id"]
    # They can use it themselves...
    ok(
        httpx.post(
            f"{served.url}/v1/chat",
            headers=served.headers,
            json={"messages": [{"role": "user", "content": "Hi", "poses": [their_id]}]},
            timeout=120,
        )
    )
    # ...and here it reads exactly as an id that never existed.
    other = refused(client.post("/v1/chat", json={"messages": history(asked, their_id)}), "unknown_pose")
    never = refused(
        client.post("/v1/chat", json={"messages": history(asked, "x" * len(their_id))}), "unknown_pose"
    )
    assert other.replace(their_id, "ID") == never.replace("x" * len(their_id), "ID")


def test_a_bad_pose_never_fails_the_requests_batched_with_it(
    client: httpx.Client, asked: dict[str, Any]
) -> None:
    pose = asked["poses"][0]

    def one(k: int) -> httpx.Response:
        ref: Any = pose["id"] if k % 2 == 0 else [float("inf")] * 72
        raw = json.dumps({"messages": history(asked, ref)})
        return client.post("/v1/chat", content=raw, headers={"Content-Type": "application/json"})

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(one, range(6)))
    for k, r in enumerate(responses):
        if k % 2 == 0:
            assert ok(r)["text"] == "Here is the pose <POSE>."
        else:
            refused(r, "invalid_input", "messages[2].poses[0]")
