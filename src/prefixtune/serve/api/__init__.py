"""The OpenAI-compatible HTTP layer. Never imports torch: it talks to `serve.engine.protocol.Engine`."""
