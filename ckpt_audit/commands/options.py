"""Options shared by the commands, declared once: ``Annotated`` types and the Enums of choices.

Typer validates an Enum option itself (a bad value is a usage error, exit 2, naming the valid
choices) and lists the choices in ``--help``, so no command checks a choice by hand. Each option
here carries its help text; a command uses the alias as its parameter's type::

    def trend(run: str, config: ConfigOpt = None, d_model: DModelOpt = None, ...) -> None
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.readers.registry import available_formats
from ckpt_audit.records import Convention, Role, Severity, frozen


class OutputFormat(str, Enum):
    """What a report is written as (every document renders in every one of these)."""

    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"
    JUNIT = "junit"
    HTML = "html"


class TableOrJson(str, Enum):
    """For outputs that are a table or a JSON document only (``bands``, ``accept``, ``watch``)."""

    TABLE = "table"
    JSON = "json"


#: Checkpoint formats a reader exists for, in detection order (``--format-hint``).
FormatHint = Enum("FormatHint", {name: name for name in available_formats()},  # type: ignore[misc]
                  type=str)


class FailOn(str, Enum):
    """The least severe finding that makes the exit code 1."""

    INFO = "info"
    WARN = "warn"
    FAIL = "fail"

    @property
    def severity(self) -> Severity:
        return Severity(self.value)


class Incomplete(str, Enum):
    """What an incomplete checkpoint (still being written) counts as for the exit code."""

    IGNORE = "ignore"
    WARN = "warn"
    FAIL = "fail"


class AuditIncomplete(str, Enum):
    """What ``audit`` does with an incomplete checkpoint: a one-line error (exit 2), or a failed
    gate (exit 1, for CI that treats "not there yet" as a failure rather than a tool error)."""

    ERROR = "error"
    FAIL = "fail"


class ExitOn(str, Enum):
    """``watch --exit-on``: stop with exit 1 at the first checkpoint reaching this."""

    NEVER = "never"
    WARN = "warn"
    FAIL = "fail"


class Device(str, Enum):
    """Where gain statistics (and accept's model) run."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def flag(*names: str, help: str, plain: bool = False) -> Any:  # noqa: A002 - Typer's keyword
    """A boolean flag, shown without a ``<bool>`` value in help. Inside ``Annotated`` (the
    default); ``plain=True`` for a ``x: bool = flag(...)`` parameter (default ``False``)."""
    if plain:
        return typer.Option(False, *names, help=help, metavar="")
    return typer.Option(*names, help=help, metavar="")


ConfigOpt = Annotated[str | None, typer.Option(
    "--config", "-c", help="Policy TOML, layered over the default policy (docs/POLICY.md).")]
FormatHintOpt = Annotated[FormatHint | None, typer.Option(
    "--format-hint", help="Read the checkpoint as this format instead of detecting it.")]
DModelOpt = Annotated[int | None, typer.Option(
    "--d-model", min=1, help="Hidden size d_model, when config.json lacks it or is wrong.")]
ConventionOpt = Annotated[Convention | None, typer.Option(
    "--convention", help="How gains are stored: direct (γ = w), offset (γ = 1 + w) or none; "
                         "default: from the model type.")]
WidthOpt = Annotated[int | None, typer.Option(
    "--width", min=40, help="Table width in columns (default: the terminal's; 80 when piped).")]
OutputOpt = Annotated[str | None, typer.Option(
    "--output", "-o", help="Write the report to FILE (the verdict still goes to stderr).")]
FailOnOpt = Annotated[FailOn, typer.Option(
    "--fail-on", help="Exit 1 when a finding is at least this severe.")]
IncompleteOpt = Annotated[Incomplete, typer.Option(
    "--incomplete", help="An incomplete checkpoint counts as (for the exit code).")]
BaselineOpt = Annotated[str | None, typer.Option(
    "--baseline", help="Known-good audit JSON (audit -f json): fail when a gain drifts from it.")]
GithubOpt = Annotated[bool | None, typer.Option(
    "--github/--no-github", metavar="", help="GitHub annotations on stdout + Markdown step summary "
                                 "(default: when GITHUB_ACTIONS=true).")]
PlotOpt = Annotated[str | None, typer.Option(
    "--plot", help="Also write a PNG of ratio against step to FILE (needs matplotlib).")]
PlotSizeOpt = Annotated[str, typer.Option("--plot-size", help="PNG size WIDTHxHEIGHT in pixels.")]
RoleOpt = Annotated[Role, typer.Option("--role", help="Role whose bands to show.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where statistics run.")]


ReferenceOpt = Annotated[str | None, typer.Option(
    "--reference", help="Ratios to this checkpoint's same-named gains (a fine-tune's base) "
                        "instead of √n, the all-ones init (docs/POLICY.md).")]
StateKeyOpt = Annotated[str | None, typer.Option(
    "--state-key", help="Key of a torch pickle holding the weights to audit (ema, model_ema).")]
AuditIncompleteOpt = Annotated[AuditIncomplete, typer.Option(
    "--incomplete", help="An incomplete checkpoint (a shard missing, an index naming an absent "
                         "file, a partial file) is: error (exit 2) or fail (exit 1).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", min=1.0, help="Seconds all remote reads may take together (each read: at most "
                               "30).")]
AllowRedirectHostOpt = Annotated[bool, flag(
    "--allow-redirect-host", help="Follow redirects to another host (the Hugging Face hub's "
                                  "CDN).")]


SettleOpt = Annotated[float, typer.Option(
    "--settle", min=0.0, help="Stat each checkpoint twice SECONDS apart; a change means 'still "
                              "being written' (incomplete).")]


@frozen
class ReadOptions:
    """How to read checkpoints: the options every auditing command shares."""

    format_hint: str | None = None
    d_model: int | None = None
    convention: Convention | None = None
    #: ``--reference``: a checkpoint (or ``first``: the run's first) whose same-named gains the
    #: ratios are measured against (docs/POLICY.md); ``None``: √n, the all-ones init.
    reference: str | None = None
    #: ``--state-key``: the key of a torch pickle whose weights to audit (``ema``).
    state_key: str | None = None

    @classmethod
    def of(cls, format_hint: Any, d_model: int | None, convention: Any,
           reference: str | None = None, state_key: str | None = None) -> ReadOptions:
        hint = getattr(format_hint, "value", format_hint)
        conv = Convention(getattr(convention, "value", convention)) if convention else None
        return cls(hint, d_model, conv, reference, state_key)

    def audit_kwargs(self, policy: Any, first: str | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`ckpt_audit.core.audit.audit_checkpoint`; the reference
        checkpoint is read here, once (``first``: the path ``--reference first`` stands for)."""
        kwargs: dict[str, Any] = {"policy": policy, "format_hint": self.format_hint,
                                  "d_model": self.d_model, "convention": self.convention}
        if self.state_key:
            kwargs["state_key"] = self.state_key
        if self.reference:
            from ckpt_audit.core.audit import load_reference

            ref = self.reference
            if ref == "first":
                if first is None:
                    raise CkptAuditError("--reference first needs a run with a checkpoint "
                                         "(it is the run's first checkpoint)")
                ref = first
            kwargs["reference"] = load_reference(ref, format_hint=self.format_hint,
                                                 convention=self.convention)
        return kwargs


def value(choice: Any) -> Any:
    """An Enum choice's value (or the plain value when a caller passed a string)."""
    return getattr(choice, "value", choice)
