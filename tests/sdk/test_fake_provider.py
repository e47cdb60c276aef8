"""The fake provider is a faithful peer of the SDKs: pointed straight at it with the real key,
each SDK completes, streams, and — with nothing in between — does see an echoed key. That last
case is what makes the proxy tests' "the SDK never sees the secret" able to fail."""

from __future__ import annotations

import pytest

import provider as fake
from conftest import ANTHROPIC_SECRET, OPENAI_SECRET
from sdks import AnthropicSdk, OpenAISdk


def direct(kind: str, provider):
    if kind == "openai":
        return OpenAISdk(provider.base + "/v1", OPENAI_SECRET), OPENAI_SECRET
    return AnthropicSdk(provider.base, ANTHROPIC_SECRET), ANTHROPIC_SECRET


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_the_sdk_completes_and_streams_against_the_fake_provider(kind, provider):
    sdk, _ = direct(kind, provider)
    assert sdk.complete("Hi") == "".join(fake.GREETING)
    assert list(sdk.stream("Hi")) == fake.GREETING
    assert [s.path for s in provider.requests()] == [sdk.path, sdk.path]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_without_vultrino_the_echoed_key_reaches_the_sdk(kind, provider):
    sdk, secret = direct(kind, provider)
    assert secret in sdk.complete(fake.ECHO_KEY)
    deltas = list(sdk.stream(fake.ECHO_KEY_TOKENS))
    assert secret in "".join(deltas)
    assert secret not in deltas, "the key must be spread over several deltas"
    # The SDK reads events with NaN in them (Python's json) and joins them too.
    assert secret in "".join(sdk.stream(fake.ECHO_KEY_TOKENS_NAN))


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_the_fake_provider_refuses_another_key_as_the_real_one_would(kind, provider):
    sdk, _ = direct(kind, provider)
    sdk = type(sdk)(sdk.client.base_url, "sk-not-the-key")
    with pytest.raises(sdk.auth_error) as err:
        sdk.complete("Hi")
    assert err.value.status_code == 401
