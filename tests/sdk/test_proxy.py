"""The official OpenAI and Anthropic SDKs through `/proxy/{alias}/…`, changed in nothing but
`base_url` and `api_key` (the agent's `vk_` key). Every scenario runs with both SDKs.

What a user relies on: completions, plain and streamed, work; the provider gets the real secret
in its own header and never the agent's key; the agent never gets the secret back, even when
the provider echoes it whole or token by token over a stream; a bad key stops at Vultrino; and a
stream reaches the agent as the provider produces it.
"""

from __future__ import annotations


import anthropic
import openai
import pytest

import provider as fake
from conftest import ANTHROPIC_SECRET, OPENAI_SECRET, api, assert_no_secret
from sdks import AnthropicSdk, OpenAISdk

SDKS = ["openai", "anthropic"]
# What the agent reads when the provider echoes its key: the secret replaced by one marker
# (vultrino_core::scrub::REDACTED), the rest of the answer intact.
REDACTED_REPLY = "Your key is [REDACTED]."


def through_vultrino(kind: str, target, key: str | None = None):
    """The SDK pointed at Vultrino, and the secret Vultrino should inject for it."""
    key = key or target.key
    if kind == "openai":
        return OpenAISdk(target.openai_base_url(), key), OPENAI_SECRET
    return AnthropicSdk(target.anthropic_base_url(), key), ANTHROPIC_SECRET


def assert_provider_got_the_secret_and_no_agent_key(provider, sdk, secret: str):
    seen = provider.requests()
    assert [s.path for s in seen] == [sdk.path], [s.path for s in seen]
    s = seen[0]
    got = {name: s.header(name) for name in ("authorization", "x-api-key")}
    assert got == sdk.expected_credential_headers(secret), got
    assert "vk_" not in s.everything(), f"a vk_ string reached the provider:\n{s.everything()}"
    # Asked for plaintext, so the scrubber sees what the provider sends.
    assert s.header("accept-encoding") == "identity", s.header("accept-encoding")
    assert s.header("content-type") == "application/json"


@pytest.mark.parametrize("kind", SDKS)
def test_plain_completion_works_through_vultrino(kind, target, provider):
    sdk, secret = through_vultrino(kind, target)
    assert sdk.complete("Hi") == "".join(fake.GREETING)
    assert_provider_got_the_secret_and_no_agent_key(provider, sdk, secret)
    if kind == "anthropic":  # the SDK's own headers pass through untouched
        assert provider.requests()[0].header("anthropic-version")


@pytest.mark.parametrize("kind", SDKS)
def test_streamed_completion_works_through_vultrino(kind, target, provider):
    sdk, secret = through_vultrino(kind, target)
    assert list(sdk.stream("Hi")) == fake.GREETING
    assert_provider_got_the_secret_and_no_agent_key(provider, sdk, secret)


@pytest.mark.parametrize("kind", SDKS)
def test_an_echoed_secret_never_reaches_the_sdk_in_a_plain_reply(kind, target, provider):
    sdk, _ = through_vultrino(kind, target)
    text = sdk.complete(fake.ECHO_KEY)
    assert_no_secret(text)
    assert text == REDACTED_REPLY, text


@pytest.mark.parametrize("kind", SDKS)
def test_an_echoed_secret_never_reaches_the_sdk_in_one_stream_delta(kind, target, provider):
    sdk, _ = through_vultrino(kind, target)
    text = "".join(sdk.stream(fake.ECHO_KEY))
    assert_no_secret(text)
    assert text == REDACTED_REPLY, text


# Each delta is clean on its own: only the event-level SSE scrubber keeps the SDK from joining
# the secret back together (fails with byte-level scrubbing alone).
@pytest.mark.parametrize("kind", SDKS)
def test_a_secret_spread_token_by_token_over_stream_deltas_never_reassembles(kind, target, provider):
    sdk, _ = through_vultrino(kind, target)
    deltas = list(sdk.stream(fake.ECHO_KEY_TOKENS))
    text = "".join(deltas)
    assert_no_secret(text)
    assert text == REDACTED_REPLY, deltas


# Every other event carries a NaN, which the SDK's json reads and serde_json refuses: the scrubber
# reads those events as the SDK does, so the secret still never reassembles (review #6; fails if
# the scrubber skips the events it cannot parse).
@pytest.mark.parametrize("kind", SDKS)
def test_events_the_sdk_reads_but_serde_refuses_are_joined_too(kind, target, provider):
    sdk, _ = through_vultrino(kind, target)
    deltas = list(sdk.stream(fake.ECHO_KEY_TOKENS_NAN))
    text = "".join(deltas)
    assert_no_secret(text)
    assert text == REDACTED_REPLY, deltas


@pytest.mark.parametrize("kind", SDKS)
@pytest.mark.parametrize("bad_key", ["wrong-secret", "revoked", "unknown-id", "not-a-vk-key"])
def test_a_bad_key_is_an_authentication_error_and_nothing_reaches_the_provider(
        kind, bad_key, target, provider):
    if bad_key == "wrong-secret":
        # A real key's id with another secret.
        _, key = target.new_key("wrong-secret")
        key = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    elif bad_key == "revoked":
        key_id, key = target.new_key("revoked")
        status, body = api(target.base, "DELETE", f"/v1/keys/{key_id}", target.admin_token)
        assert status == 204, body
    elif bad_key == "unknown-id":
        key = "vk_0000000000000000_" + "A" * 43
    else:
        key = "sk-not-a-vultrino-key"
    sdk, _ = through_vultrino(kind, target, key)
    with pytest.raises(sdk.auth_error) as err:
        sdk.complete("Hi")
    assert err.value.status_code == 401
    # Vultrino's own refusal, told apart from the provider's by its header.
    assert err.value.response.headers.get("x-vultrino-error"), dict(err.value.response.headers)
    assert provider.requests() == []


@pytest.mark.parametrize("kind", SDKS)
def test_an_unknown_alias_is_a_permission_error_not_the_providers_not_found(kind, target, provider):
    if kind == "openai":
        sdk = OpenAISdk(f"{target.base}/proxy/no-such-alias/v1", target.key)
        expected = openai.PermissionDeniedError
    else:
        sdk = AnthropicSdk(f"{target.base}/proxy/no-such-alias", target.key)
        expected = anthropic.PermissionDeniedError
    with pytest.raises(expected) as err:
        sdk.complete("Hi")
    assert err.value.status_code == 403
    # Outside the key's scopes, so refused before any lookup (scope_denied: it does not tell
    # which aliases exist); either way Vultrino's own refusal, marked as such.
    assert err.value.response.headers.get("x-vultrino-error") == "scope_denied"
    assert provider.requests() == []


@pytest.mark.parametrize("kind", SDKS)
def test_a_stream_reaches_the_sdk_while_the_provider_is_still_sending(kind, target, provider):
    sdk, _ = through_vultrino(kind, target)
    deltas = sdk.stream(fake.WAIT_AT_GATE)
    first = next(deltas)  # the provider now waits at the gate, its stream unfinished
    assert first == fake.GREETING[0]
    assert not provider.finished.is_set(), (
        "the first delta reached the SDK only after the provider had sent the whole stream")
    provider.gate.set()
    assert [first, *deltas] == fake.GREETING
    assert provider.finished.is_set()
