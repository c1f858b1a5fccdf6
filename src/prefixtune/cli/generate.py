"""`prefixtune generate`: continue a prompt with an adapter (or the bare model), streaming tokens.

One job: read the prompt (argument or stdin), wrap it in the adapter's task format unless `--raw`, and
stream the continuation to stdout as it is generated.
"""

from __future__ import annotations

import argparse
import sys

from prefixtune.cli.common import add_model_flags, load_for_inference, stored_task_format
from prefixtune.errors import ConfigError
from prefixtune.train.formats import TaskFormat

EXAMPLES = """\
examples:
  prefixtune generate --adapter runs/demo/adapter "A gorgeous, witty, seductive movie."
  echo "The plot is a mess." | prefixtune generate --adapter runs/demo/adapter --max-new-tokens 2
  prefixtune generate --adapter none --raw "Once upon a time" --temperature 0.8 --top-p 0.95
  prefixtune generate --adapter runs/chat/adapter --chat "What is prefix tuning?"

With an adapter trained on a classification task, the prompt is put into its template (for the demo:
"Review: {text}\\nSentiment:"); --raw sends the prompt as typed. --chat applies the tokenizer's chat template.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `generate` subcommand."""
    parser = subparsers.add_parser(
        "generate",
        help="generate text with an adapter",
        description="Generate a continuation of a prompt with an adapter (or the bare model), streamed to stdout.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="?", default="-", help="the prompt; `-` or omitted: read stdin")
    add_model_flags(parser, adapter_required=False)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default: 64)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampling")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (with --temperature)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--raw", action="store_true", help="send the prompt as typed (no task template)")
    mode.add_argument("--chat", action="store_true", help="treat the prompt as a user message (chat template)")
    parser.set_defaults(func=run)


def build_prompt(text: str, tokenizer, fmt: TaskFormat | None, *, raw: bool, chat: bool) -> list[int]:
    """Token ids of the prompt, formatted the way the adapter was trained unless `raw`."""
    if chat or (fmt is not None and fmt.kind == "chat" and not raw):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("--chat needs a tokenizer with a chat template; this model's has none")
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(rendered, add_special_tokens=False)["input_ids"]
    if fmt is not None and fmt.kind == "classification" and not raw:
        text = fmt.render_prompt(text)
    return tokenizer(text)["input_ids"]


def run(args: argparse.Namespace) -> int:
    """Generate and stream to stdout."""
    import torch
    from transformers import TextStreamer

    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    text = text.rstrip("\n")
    if not text:
        raise ConfigError("the prompt is empty; pass it as an argument or on stdin")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {args.max_new_tokens} must be >= 1")
    pm, tokenizer, adapter_name = load_for_inference(args.model, args.adapter)
    ids = build_prompt(text, tokenizer, stored_task_format(pm, adapter_name), raw=args.raw, chat=args.chat)
    sampling = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p} if args.temperature > 0 else {}
    torch.manual_seed(args.seed)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    pm.generate(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        adapter_names=[adapter_name],
        max_new_tokens=args.max_new_tokens,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        **(sampling or {"do_sample": False}),
    )
    sys.stdout.flush()
    return 0
