"""The OpenAI Responses API: stored responses and ``previous_response_id``
conversations, served through the chat-completions pipeline (docs/responses.md)."""
