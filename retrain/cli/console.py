"""The shared console of every command: log and warning lines, progress, and the
mapping from a user's mistake (UserError) or Ctrl-C to one line and an exit status."""

from __future__ import annotations

import functools
import sys
import time

import click

from retrain.cli.fields import in_flags
from retrain.errors import UserError


def reports_user_errors(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            click.echo(f"error: {in_flags(str(e))}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; everything already computed is kept (cached bottlenecks, finished fine-tuning "
                       "epochs): run the same command again to go on", err=True)
            sys.exit(130)

    return wrapper



def echo(message: str, err: bool = False) -> None:
    """A line on stdout (or stderr), library names in flags; on a terminal through tqdm, which
    lifts a live progress bar out of its way."""
    message = in_flags(message)
    if sys.stderr.isatty():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr if err else sys.stdout)
    else:
        click.echo(message, err=err)


def warn(message: str) -> None:
    echo(f"warning: {message}", err=True)


def log(message: str) -> None:
    echo(message)


def progress(total: int, label: str, unit: str = "images"):
    """Progress on stderr: a live tqdm bar (count, rate, ETA) on a terminal; otherwise a plain
    line at most every ten seconds and at the end, so logs stay readable. The returned function
    takes how many more are done; the bar closes when the total is reached."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=label, unit=unit[:-1] if unit.endswith("s") else unit, file=sys.stderr,
                   dynamic_ncols=True)

        def update_bar(count: int) -> None:
            bar.update(count)
            if bar.n >= total:
                bar.close()

        return update_bar

    start = time.monotonic()
    state = {"done": 0, "shown": start}

    def update(count: int) -> None:
        state["done"] += count
        now = time.monotonic()
        if now - state["shown"] >= 10 or state["done"] >= total:
            state["shown"] = now
            rate = state["done"] / max(now - start, 1e-9)
            left = (total - state["done"]) / max(rate, 1e-9)
            eta = f", {left // 60:.0f} min {left % 60:02.0f} s left" if state["done"] < total else ""
            click.echo(f"{label}: {state['done']}/{total} ({rate:.1f} {unit}/s{eta})", err=True)

    return update
