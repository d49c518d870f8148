"""Model checkpoints on the lake, keyed by model name and the last day trained.

`<lake>/checkpoints/<model>/ds=<ds>/checkpoint.pt` holds a dict saved with
torch.save (weights, optimizer state, config): the warm start of day ds+1 looks
it up by date, never as "latest". Writes are atomic (temp file, then rename), so
a crashed run never leaves a half-written checkpoint behind; the temp file of a
killed writer is invisible to readers and removed by the next save of that day.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from typing import Any

import pyarrow.fs as pafs
import torch

_TMP_PREFIX = ".checkpoint."


def checkpoint_uri(lake: str, model: str, ds: str) -> str:
    """URI of the checkpoint of `model` trained through `ds`."""
    return f"{lake.rstrip('/')}/checkpoints/{model}/ds={ds}/checkpoint.pt"


def checkpoint_exists(uri: str) -> bool:
    """True when a checkpoint file is at `uri`."""
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def save_checkpoint(uri: str, payload: dict[str, Any]) -> None:
    """Write `payload` (tensors, numbers, strings, dicts) to `uri` atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    fs, path = pafs.FileSystem.from_uri(uri)
    folder = path.rsplit("/", 1)[0]
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/{_TMP_PREFIX}{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(buffer.getvalue())
    fs.move(tmp, path)
    for left in fs.get_file_info(pafs.FileSelector(folder)):
        if left.base_name.startswith(_TMP_PREFIX):  # a writer killed before its rename
            with contextlib.suppress(FileNotFoundError):  # another save removed it first
                fs.delete_file(left.path)


def load_checkpoint(uri: str) -> dict[str, Any]:
    """Read the checkpoint at `uri` (FileNotFoundError naming it when missing)."""
    if not checkpoint_exists(uri):
        raise FileNotFoundError(f"no checkpoint at {uri}")
    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as stream:
        data = stream.read()
    return torch.load(io.BytesIO(data), weights_only=True)


def checkpoint_days(lake: str, model: str) -> list[str]:
    """The sorted days through which `model` has a checkpoint."""
    fs, path = pafs.FileSystem.from_uri(f"{lake.rstrip('/')}/checkpoints/{model}")
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    found = fs.get_file_info(pafs.FileSelector(path))
    days = [info.base_name.removeprefix("ds=") for info in found if info.base_name.startswith("ds=")]
    return sorted(d for d in days if checkpoint_exists(checkpoint_uri(lake, model, d)))
