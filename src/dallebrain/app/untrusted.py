"""What comes from a browser is data, never markup, formulas or paths.

- `markdown_text`: a reader name, a file name or a message shown in a gr.Markdown appears as itself (gradio's
  sanitiser removes scripts, but links, images and formatting would still get through).
- `csv_cell`: an exported cell a spreadsheet would run as a formula is made inert (OWASP "CSV injection").
- `lora_adapters` / `adapter_folder`: a LoRA adapter is chosen by name among the folders of one server-side
  folder, so the page cannot be used to probe the server's files.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping them all turns off emphasis,
# links, images, autolinks, tables and gradio's $$ LaTeX at once. & < > " ' are left to html.escape.
_MARKDOWN_PUNCTUATION = re.compile(r"([!#$%()*+,\-./:;=?@\[\\\]^_`{|}~])")
# A cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and Google Sheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# One path component of letters, digits, '.', '_', '-', not starting with '.': never '..', never absolute.
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
LORA_OFF = "LoRA adapters are off on this server (its operator turns them on with --lora-dir)"


def markdown_text(text) -> str:
    """`text` escaped for a gr.Markdown, so the page shows exactly these characters."""
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text)), quote=True)


def csv_cell(value):
    """A text cell that a spreadsheet would read as a formula gets a leading apostrophe; other values pass."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def lora_adapters(lora_dir) -> list[str]:
    """The adapters the page offers: folders directly in lora_dir holding a .safetensors file (a symbolic link
    that leads outside lora_dir is not one)."""
    if lora_dir is None:
        return []
    root = Path(lora_dir).resolve()
    return [child.name for child in sorted(root.iterdir())
            if ADAPTER_NAME.fullmatch(child.name) and child.is_dir() and _inside(child, root)
            and any(child.glob("*.safetensors"))]


def adapter_folder(name, lora_dir) -> Path:
    """The folder of the adapter called `name` in lora_dir. ValueError otherwise, whose message names no server
    path and is the same whether or not something exists outside lora_dir (the name is only compared with the
    listing of lora_dir, never opened as a path)."""
    if lora_dir is None:
        raise ValueError(LORA_OFF)
    name = str(name).strip()
    if not ADAPTER_NAME.fullmatch(name):
        raise ValueError("LoRA adapter: choose one of this server's adapters by its name (letters, digits, '.', "
                         "'_', '-'), not a path")
    available = lora_adapters(lora_dir)
    if name not in available:
        raise ValueError(f"no LoRA adapter named '{name}' on this server; available: "
                         f"{', '.join(available) or 'none'}")
    return Path(lora_dir).resolve() / name


def redact(message: str, labels: dict[str, str]) -> str:
    """`message` with each server path (a key of `labels`) replaced by its label; longest path first, so a
    folder's label does not split the path of a file inside it."""
    for path in sorted(labels, key=len, reverse=True):
        message = message.replace(path, labels[path])
    return message
