"""``ckpt-audit accept CKPT --probe FILE``: MTP draft acceptance measured from the checkpoint.

Definitions, alignment and the JSON schema: docs/MTP.md. torch/transformers are imported only
when the command runs.
"""

from __future__ import annotations

import json

import typer

from ckpt_audit.commands._common import console, emit, finite
from ckpt_audit.commands.options import Device, OutputOpt, TableOrJson, flag
from ckpt_audit.mtp.layouts import LAYOUTS, ORDERS

#: every layout accept can run (from core.layouts.MTP_LAYOUTS through mtp.layouts)
_LAYOUT_HELP = " | ".join(["auto", *LAYOUTS])


def register(app: typer.Typer) -> None:
    @app.command("accept")
    def accept(
        ckpt: str = typer.Argument(..., help="Checkpoint folder (config.json + weights)."),
        probe: str = typer.Option(..., "--probe", "-p",
                                  help="JSONL (input_ids or text) or plain text, one doc a line."),
        temperature: list[float] = typer.Option(
            [1.0], "--temperature", "-t", help="Sampling temperature(s); repeat for several."),
        max_tokens: int | None = typer.Option(None, "--max-tokens", min=2,
                                                 help="Truncate each document to N tokens."),
        max_docs: int | None = typer.Option(None, "--max-docs", min=1,
                                               help="Use the first N documents."),
        batch_size: int = typer.Option(8, "--batch-size", "-b", min=1,
                                       help="Documents per forward pass."),
        device: Device = typer.Option(Device.AUTO, "--device", help="Where the model runs."),
        dtype: str = typer.Option("auto", "--dtype",
                                  help="auto | float32 | bfloat16 | float16"),
        device_map: str | None = typer.Option(
            None, "--device-map", help="auto: spread the trunk over devices with accelerate."),
        layout: str = typer.Option("auto", "--layout", help=_LAYOUT_HELP),
        concat_order: str | None = typer.Option(
            None, "--concat-order", help=" | ".join(ORDERS) + " (default per layout)."),
        max_depths: int | None = typer.Option(None, "--depths", min=1,
                                                 help="Score only the first N depths."),
        speculate: bool = flag("--speculate", plain=True,
                               help="Also run a real greedy draft-and-verify loop."),
        spec_prompt: int = typer.Option(8, "--spec-prompt-tokens", min=1,
                                        help="--speculate: prompt tokens per document."),
        spec_new: int = typer.Option(32, "--spec-new-tokens", min=2,
                                     help="--speculate: tokens to generate per prompt."),
        what_if_renorm: bool = flag(
            "--what-if-renorm", plain=True,
            help="Also score with the final gain rescaled to ratio 1."),
        final_scale: float | None = typer.Option(
            None, "--final-scale", help="Also score with the final gain multiplied by X."),
        grad_balance: bool = flag(
            "--grad-balance", plain=True,
            help="Gradient norms of main vs λ·MTP loss on the trunk."),
        mtp_lambda: float | None = typer.Option(None, "--mtp-lambda",
                                                   help="λ for --grad-balance."),
        max_logits_mb: float = typer.Option(
            1024.0, "--max-logits-mb", min=1.0,
            help="Memory budget (MiB) for logits and their statistics: positions are scored in "
                 "chunks that fit it (docs/MTP.md)."),
        fmt: TableOrJson = typer.Option(TableOrJson.TABLE, "--format", "-f",
                                        help="Report format."),
        output: OutputOpt = None,
        quiet: bool = flag("--quiet", "-q", help="No progress bar.", plain=True),
    ) -> None:
        """Measure MTP draft acceptance on a probe set, teacher-forced, from a checkpoint."""
        finite("--final-scale", final_scale)
        finite("--mtp-lambda", mtp_lambda)
        finite("--max-logits-mb", max_logits_mb)
        from ckpt_audit.mtp.engine import accept_run

        res = accept_run(ckpt, probe, temperatures=tuple(temperature), max_tokens=max_tokens,
                         max_docs=max_docs, batch_size=batch_size, device=device.value,
                         dtype=dtype,
                         device_map=device_map, layout=layout, concat_order=concat_order,
                         max_depths=max_depths, what_if_renorm=what_if_renorm,
                         final_scale=final_scale, speculate=speculate,
                         spec_prompt_tokens=spec_prompt, spec_new_tokens=spec_new,
                         grad_balance=grad_balance, mtp_lambda=mtp_lambda,
                         max_logits_mb=max_logits_mb, progress=not quiet)
        import os

        if int(os.environ.get("RANK", "0")) != 0:
            return
        if fmt is TableOrJson.JSON:
            from ckpt_audit.report.accept import to_dict

            emit(json.dumps(to_dict(res), indent=2) + "\n", output, [ckpt])
        elif output:
            from io import StringIO

            from rich.console import Console

            from ckpt_audit.report.accept import print_result

            buf = StringIO()
            print_result(res, Console(file=buf, width=120, soft_wrap=False))
            emit(buf.getvalue(), output, [ckpt])
        else:
            from ckpt_audit.report.accept import print_result

            print_result(res, console())
        if output:
            from ckpt_audit.commands._common import say

            say(f"ckpt-audit: accept report ({fmt.value}) written to {output}")
