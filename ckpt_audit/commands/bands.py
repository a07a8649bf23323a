"""``ckpt-audit bands --d-model N``: the policy's bands in absolute norm units."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer

from ckpt_audit.commands.options import ConfigOpt, RoleOpt, TableOrJson
from ckpt_audit.core.policy import Policy
from ckpt_audit.records import Role


def bands_table(policy: Policy, d_model: int, role: Role) -> dict[str, Any]:
    """``{"schema", "d_model", "init_norm", "bands": {status: [lo, hi]}}`` in norm units."""
    root = math.sqrt(d_model)
    b = policy.bands_for(role)
    lo_h, hi_h = b.healthy
    return {
        "schema": "ckpt-audit.bands/1",
        "d_model": d_model,
        "init_norm": root,
        "role": role.value,
        "policy": policy.name,
        "bands": {
            s.value: [None if lo is None else lo * root, None if hi is None else hi * root]
            for s, (lo, hi) in b.ranges().items()
        },
        "ratio_bands": {s.value: [lo, hi] for s, (lo, hi) in b.ranges().items()},
        "healthy": [lo_h * root, hi_h * root],
        "severity": {s.value: policy.severity_for(role, s).value for s in b.ranges()},
    }


def _rng(lo: float | None, hi: float | None, spec: str = ".1f") -> str:
    if lo is None:
        return f"< {hi:{spec}}"
    if hi is None:
        return f"> {lo:{spec}}"
    return f"{lo:{spec}} – {hi:{spec}}"


def register(app: typer.Typer) -> None:
    @app.command("bands")
    def bands(
        d_model: Annotated[int, typer.Option("--d-model", min=1,
                                             help="Length of the gain (hidden size).")],
        config: ConfigOpt = None,
        role: RoleOpt = Role.FINAL,
        fmt: Annotated[TableOrJson, typer.Option("--format", "-f",
                                                 help="Report format.")] = TableOrJson.TABLE,
    ) -> None:
        """Show √d and each status's band in absolute norm units."""
        from rich.table import Table

        from ckpt_audit.commands._common import console
        from ckpt_audit.core.policy import load_policy

        data = bands_table(load_policy(config), d_model, role)
        if fmt is TableOrJson.JSON:
            typer.echo(json.dumps(data, indent=2))
            return
        t = Table(title=f"d_model {d_model}: init norm √d = {data['init_norm']:.1f}; healthy "
                        f"range {data['healthy'][0]:.1f} – {data['healthy'][1]:.1f} "
                        f"(policy {data['policy']}, role {role.value})", title_justify="left")
        for col in ("status", "‖γ‖₂ range", "ratio range", "severity"):
            t.add_column(col)
        for status, (lo, hi) in data["bands"].items():
            rlo, rhi = data["ratio_bands"][status]
            t.add_row(status, _rng(lo, hi), _rng(rlo, rhi, "g"),
                      data["severity"][status])
        console().print(t)
