"""The two official SDKs behind one small interface, so every scenario runs on both.

Each wrapper builds the SDK's own client with nothing but `base_url` and `api_key` and calls it
the way its README shows; it only flattens the result to text (`complete`) or to the text deltas
in the order the SDK yields them (`stream`).
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai


class OpenAISdk:
    name = "openai"
    path = "/v1/chat/completions"
    auth_error = openai.AuthenticationError

    def __init__(self, base_url: str, api_key: str):
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key)

    def complete(self, prompt: str) -> str:
        r = self.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
        assert r.choices[0].finish_reason == "stop"
        return r.choices[0].message.content

    def stream(self, prompt: str) -> Iterator[str]:
        """The text deltas as the SDK yields them; asserts the stream ended as a stream should."""
        finish = None
        with self.client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}],
                stream=True) as chunks:
            for chunk in chunks:
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield choice.delta.content
                    finish = choice.finish_reason or finish
        assert finish == "stop", "the stream ended without its final chunk"

    @staticmethod
    def expected_credential_headers(secret: str) -> dict:
        return {"authorization": f"Bearer {secret}", "x-api-key": None}


class AnthropicSdk:
    name = "anthropic"
    path = "/v1/messages"
    auth_error = anthropic.AuthenticationError

    def __init__(self, base_url: str, api_key: str):
        self.client = anthropic.Anthropic(base_url=base_url, api_key=api_key)

    def complete(self, prompt: str) -> str:
        r = self.client.messages.create(
            model="claude-sonnet-5-5", max_tokens=64,
            messages=[{"role": "user", "content": prompt}])
        assert r.stop_reason == "end_turn"
        return "".join(block.text for block in r.content if block.type == "text")

    def stream(self, prompt: str) -> Iterator[str]:
        stopped = False
        with self.client.messages.create(
                model="claude-sonnet-5-5", max_tokens=64,
                messages=[{"role": "user", "content": prompt}], stream=True) as events:
            for event in events:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield event.delta.text
                stopped = stopped or event.type == "message_stop"
        assert stopped, "the stream ended without message_stop"

    @staticmethod
    def expected_credential_headers(secret: str) -> dict:
        return {"authorization": None, "x-api-key": secret}
