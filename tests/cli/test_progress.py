"""Progress: the trainer reports one event per optimizer step to a callback and draws nothing itself; the CLI
renders the events as a bar on stderr."""

from __future__ import annotations

from prefixtune.cli.progress import progress_bar
from prefixtune.config import PrefixConfig
from prefixtune.models import load_model
from prefixtune.train.config import TrainConfig
from prefixtune.train.progress import ProgressEvent
from prefixtune.train.run import run_training


def _config(model_dir, files, out, **changes) -> TrainConfig:
    train, _ = files
    base = dict(model=str(model_dir), data=str(train), output_dir=str(out), max_steps=3, batch_size=4, eval_every=0)
    return TrainConfig(**{**base, **changes})


def test_the_trainer_reports_every_step_and_draws_nothing(tiny_gpt2_dir, sentiment_files, tmp_path, capfd):
    model, tok = load_model(tiny_gpt2_dir)
    events: list[ProgressEvent] = []
    config = _config(tiny_gpt2_dir, sentiment_files, tmp_path / "run", progress=True)
    run_training(
        config, PrefixConfig(num_virtual_tokens=2, seed=0), model=model, tokenizer=tok, on_progress=events.append
    )
    assert [e.step for e in events] == [1, 2, 3] and all(e.max_steps == 3 for e in events)
    assert all(e.loss > 0 and e.learning_rate >= 0 and e.tokens_per_second > 0 for e in events)
    assert "step" not in capfd.readouterr().err  # the library drew no bar, although progress=True


def test_the_cli_bar_renders_events_on_stderr(capfd):
    with progress_bar(True) as show:
        assert show is not None
        for step in (3, 4):  # a resumed run: the bar starts at the restored step
            show(ProgressEvent(step, 4, 0.5, 1e-3, 100.0))
    err = capfd.readouterr().err
    assert "4/4" in err and "loss=0.5000" in err
    with progress_bar(False) as show:
        assert show is None
