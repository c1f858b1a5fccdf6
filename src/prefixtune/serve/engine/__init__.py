"""The serving engine: typed messages, the `Engine` protocol, scheduler (pure Python), KV store and runner
(torch), and the async engine that ties them together. This `__init__` imports nothing, so `serve/api` can
import `engine.messages` and `engine.protocol` without pulling in torch.
"""
