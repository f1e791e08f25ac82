"""Executing a stage notebook with Papermill, and rendering it as HTML with code hidden.

Papermill and nbconvert come with the package's `notebook` extra: this module imports them,
the command line imports it only to run stages.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert import HTMLExporter

ExecutionError = pm.PapermillExecutionError


def execute(notebook: Path, out: Path, parameters: dict, verbose: bool = False) -> None:
    """Run `notebook` with `parameters` into `out`; `verbose` shows Papermill's cell bar and the kernel's log.

    Raises `ExecutionError` when a cell fails (the partly executed notebook is still written).
    """
    quiet = {} if verbose else {"extra_arguments": ["--IPKernelApp.log_level=ERROR"]}
    if not verbose:  # the notebooks read every key through `preset` and config, so papermill's
        logging.getLogger("papermill").setLevel(logging.ERROR)  # "unknown parameter" notes are noise
    pm.execute_notebook(notebook, out, parameters=parameters, kernel_name="python3", progress_bar=verbose,
                        cwd=str(Path.cwd()), **quiet)


def collapse_carriage_returns(text: str) -> str:
    """What a terminal shows of a stream: each line's text after its last carriage return.

    A progress bar redraws its line with '\r' hundreds of times; a browser would print every redraw.
    """
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


PROGRESS_LINE = re.compile(r"^.*\d+%\|.*\|\s*\d+/\d+\s*\[.*$")  # a tqdm line: '... 40%|████  | 4/10 [00:02<...]'


def drop_progress_lines(text: str) -> str:
    """A stream's text without its progress-bar lines: the terminal showed them, a report need not."""
    return "".join(line for line in text.splitlines(keepends=True) if not PROGRESS_LINE.match(line))


def render_html(notebook: Path) -> Path:
    """The executed notebook as HTML with code cells hidden (outputs and markdown only)."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        merged = []  # consecutive writes to one stream are one text, as a terminal shows them
        for output in cell.get("outputs", []):
            if (output.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                    and merged[-1]["name"] == output["name"]):
                merged[-1]["text"] += output["text"]
            else:
                merged.append(output)
        for output in merged:
            if output.get("output_type") == "stream":
                output["text"] = drop_progress_lines(collapse_carriage_returns(output["text"]))
        if "outputs" in cell:  # a stream left empty (it held only progress bars) is no output at all
            cell["outputs"] = [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    out = notebook.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out
