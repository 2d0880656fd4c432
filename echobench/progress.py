"""A progress bar over images on stderr (tqdm), shared by the wings that generate or read EchoMod's
pairs (`echobench.echoalign`, `echobench.bench`, `echobench.harness`). Imports nothing of echobench, so
any wing may use it; tqdm is imported only when a bar is made."""

from __future__ import annotations


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar of `total` images labelled `desc`, on stderr; `enabled=False` makes a silent one."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def write_line(text: str) -> None:
    """One line on stderr that leaves the progress bars above it intact (tqdm.write)."""
    import sys

    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr)
