"""docs/serving.md's client example (the lines between the markers are its code block, word for word; the tests
run this file against a server on a tiny model): a completion and a streamed chat completion."""

# example:start
from openai import OpenAI

from example_inputs import model_path, running_server

url = running_server(model_path)  # `prefixtune serve --model M --adapters DIR`: "http://127.0.0.1:8000"
client = OpenAI(base_url=url + "/v1", api_key="unused")
completion = client.completions.create(model="my-adapter", prompt="Review: great film\nSentiment:", max_tokens=2)
print(completion.choices[0].text)
stream = client.chat.completions.create(model="my-adapter", messages=[{"role": "user", "content": "hi"}], stream=True)
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="")  # the chunks of the server-sent events
# example:end

assert completion.usage.completion_tokens == 2 and completion.model == "my-adapter"
assert chunk.choices[0].finish_reason in ("stop", "length")
print("\nserving example: completion and streamed chat answered")
