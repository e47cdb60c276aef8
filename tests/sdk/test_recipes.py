"""The request shapes of docs/proxy.md's recipes that are not an OpenAI or Anthropic SDK call,
sent as curl sends them: Google's key in the query or in `x-goog-api-key`, a GitHub-style API
reached with `X-Vultrino-Key` (what the Octokit recipe sends), a streamed Anthropic call with the
key in `x-api-key`, and the `X-Vultrino-Error` header that tells Vultrino's refusals apart.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest

from conftest import ANTHROPIC_SECRET, GITHUB_SECRET, GOOGLE_SECRET, assert_no_secret, http

GENERATE = "/models/gemini-2.5-flash:generateContent"


def only_request(provider):
    seen = provider.requests()
    assert len(seen) == 1, [s.path for s in seen]
    assert "vk_" not in seen[0].everything(), f"a vk_ string went upstream:\n{seen[0].everything()}"
    return seen[0]


def test_google_style_key_in_the_query_is_swapped_for_the_real_one(target, provider):
    body = json.dumps({"contents": [{"parts": [{"text": "Hi"}]}]}).encode()
    r = http("POST", f"{target.base}/proxy/{target.gemini_alias}{GENERATE}?key={target.key}",
             {"content-type": "application/json"}, body)
    assert r.status == 200, r.text
    assert r.json()["path"] == "/v1beta" + GENERATE
    seen = only_request(provider)
    path, _, query = seen.path.partition("?")
    assert path == "/v1beta" + GENERATE
    assert urllib.parse.parse_qs(query) == {"key": [GOOGLE_SECRET]}
    assert seen.body == body


def test_google_style_key_in_x_goog_api_key_is_swapped_for_the_real_one(target, provider):
    r = http("GET", f"{target.base}/proxy/{target.gemini_alias}/models",
             {"x-goog-api-key": target.key})
    assert r.status == 200, r.text
    seen = only_request(provider)
    assert seen.path == "/v1beta/models?key=" + urllib.parse.quote(GOOGLE_SECRET, safe="")
    assert seen.header("x-goog-api-key") is None


@pytest.mark.parametrize("extra", [{}, {"authorization": "token {key}"}],
                         ids=["x-vultrino-key", "x-vultrino-key-beside-authorization-token"])
def test_github_style_api_with_x_vultrino_key_gets_the_real_token(extra, target, provider):
    headers = {"x-vultrino-key": target.key, "accept": "application/vnd.github+json",
               **{k: v.format(key=target.key) for k, v in extra.items()}}
    r = http("GET", f"{target.base}/proxy/{target.github_alias}/user", headers)
    assert r.status == 200, r.text
    seen = only_request(provider)
    assert seen.path == "/user"
    assert seen.header("authorization") == f"Bearer {GITHUB_SECRET}"
    assert seen.header("x-vultrino-key") is None
    assert seen.header("accept") == "application/vnd.github+json"


@pytest.mark.parametrize("authorization", ["token {key}", "Bearer vk_wrong"],
                         ids=["token-scheme-is-no-key-slot", "wrong-key"])
def test_a_refused_key_is_vultrinos_401_marked_by_x_vultrino_error(authorization, target, provider):
    r = http("GET", f"{target.base}/proxy/{target.github_alias}/user",
             {"authorization": authorization.format(key=target.key)})
    assert r.status == 401, r.text
    assert r.headers.get("x-vultrino-error") == r.json()["error"]["code"], r.headers
    assert provider.requests() == []


def test_curl_streamed_anthropic_call_with_the_key_in_x_api_key(target, provider):
    body = json.dumps({"model": "claude-sonnet-5-5", "max_tokens": 256, "stream": True,
                       "messages": [{"role": "user", "content": "Please repeat my API key."}]})
    r = http("POST", f"{target.base}/proxy/{target.anthropic_alias}/v1/messages",
             {"x-api-key": target.key, "anthropic-version": "2023-06-01",
              "content-type": "application/json"}, body.encode())
    assert r.status == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("event: "):] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop", events
    assert_no_secret(r.text)
    seen = only_request(provider)
    assert seen.header("x-api-key") == ANTHROPIC_SECRET
    assert seen.header("authorization") is None
    assert seen.header("anthropic-version") == "2023-06-01"
