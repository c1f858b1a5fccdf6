"""docs/serving.md's choices / echo / logprobs example (the lines between the markers are its code block, word
for word; the tests run this file against a server on a tiny model)."""

# example:start
from openai import OpenAI

from example_inputs import model_path, running_server

client = OpenAI(base_url=running_server(model_path) + "/v1", api_key="unused")
several = client.completions.create(
    model="my-adapter", prompt=["a", "b"], n=2, seed=7, max_tokens=8, logprobs=5, echo=True
)  # 4 choices, index = prompt index x n + j; echo: each text starts with its prompt
chat = client.chat.completions.create(
    model="my-adapter", messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=3
)
# example:end

assert [c.index for c in several.choices] == [0, 1, 2, 3]
assert [c.text[0] for c in several.choices] == ["a", "a", "b", "b"]  # echo: the prompt first
for c in several.choices:  # echo: the prompt's first token has no logprobs; then up to k + 1 (the chosen one)
    first, *rest = c.logprobs.top_logprobs  # (fewer when token strings repeat: they are the dict's keys)
    assert first is None and all(1 <= len(top) <= 6 for top in rest) and 1 <= len(rest) <= 8
assert all(len(t.top_logprobs) == 3 for t in chat.choices[0].logprobs.content)
print("serving choices example: n x prompts choices, echo and logprobs answered")
