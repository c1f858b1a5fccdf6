"""What the examples in this folder take from outside: a model directory and a token batch for it.

`python docs/examples/NAME.py MODEL_DIR` runs an example on that model (tests/docs runs each on a tiny one);
the batch is three rows of random token ids, the last row left-padded, and labels equal to the ids.
"""

import sys

import torch

model_path = sys.argv[1] if len(sys.argv) > 1 else "path/to/model"
ids = torch.randint(3, 100, (3, 8), generator=torch.Generator().manual_seed(0))  # (B, T)
mask = torch.ones_like(ids)
mask[2, :3] = 0  # left padding
labels = ids.masked_fill(mask == 0, -100)
micro_batches = [
    {"input_ids": ids[i : i + 1], "attention_mask": mask[i : i + 1], "labels": labels[i : i + 1]} for i in range(2)
]


def running_server(model_path: str, adapters: tuple[str, ...] = ("my-adapter",)) -> str:
    """What `prefixtune serve --model MODEL_DIR --adapters DIR` runs, in this process on a free port: `adapters`
    made on the model (random values), served with the defaults otherwise. Returns the server's URL."""
    import socket
    import tempfile
    import threading
    import time
    from pathlib import Path

    import uvicorn

    import prefixtune as pt
    from prefixtune.models import load_model
    from prefixtune.serve.config import ServeConfig
    from prefixtune.serve.server import create_app

    root = Path(tempfile.mkdtemp(prefix="adapters-"))
    maker, _ = load_model(model_path)
    for name in adapters:
        pt.attach(maker, pt.PrefixConfig(method="kv", num_virtual_tokens=4), adapter_name=name).save_adapter(
            root / name, name
        )
    model, tokenizer = load_model(model_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(model, tokenizer, ServeConfig.from_flat(model=model_path, adapters=str(root), port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the example server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"
